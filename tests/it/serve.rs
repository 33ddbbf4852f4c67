//! `lakectl serve` through a real HTTP client (reqwest) against the real binary: auth,
//! every route, upload idempotency, size limit, bad rows, refused write SQL, concurrent
//! uploads, rollback, OpenAPI and docs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::{text, Project, LAKECTL};
use crate::mutate::{csv, sales};

pub const TOKEN: &str = "s3cret-token";

/// A running `lakectl serve` (killed on drop).
pub struct Server {
    child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(p: &Project, extra: &[&str]) -> Server {
    serve_with(p, extra, &[("LAKECTL_TOKEN", TOKEN)])
}

/// `lakectl serve` with `extra` arguments and `env` (no `LAKECTL_TOKEN` unless given).
fn serve_with(p: &Project, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(LAKECTL)
        .args(["serve", "--manifests", "manifests", "--addr", "127.0.0.1:0"])
        .args(extra)
        .env_remove("LAKECTL_TOKEN")
        .envs(env.iter().copied())
        .env("LAKECTL_TEST_S3_SECRET", crate::s3::SECRET)
        .current_dir(p.root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .to_string();
    Server { child, base }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        client().get(self.url(path)).bearer_auth(TOKEN)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        client().post(self.url(path)).bearer_auth(TOKEN)
    }
}

pub async fn json(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

async fn rows(s: &Server) -> i64 {
    let (code, v) = json(
        s.get("/api/v1/query")
            .query(&[("sql", "select count(*) as n from shop.sales")]),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v["rows"][0]["n"].as_i64().unwrap()
}

fn upload_csv(first: u64, n: u64) -> String {
    let mut s = String::from("id,ts,region,qty\n");
    for i in first..first + n {
        s.push_str(&format!(
            "{i},2024-03-0{}T10:00:00Z,eu,{}\n",
            1 + i % 3,
            i % 10
        ));
    }
    s
}

fn project() -> Project {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(true, ""));
    p.apply_converges();
    p
}

#[tokio::test]
async fn every_route_through_a_real_client() {
    let p = project();
    let s = serve(
        &p,
        &[
            "--max-upload-mb",
            "1",
            "--max-rows",
            "20",
            "--query-timeout-secs",
            "2",
        ],
    );

    // Auth: /healthz and the pages without data (the console, the docs) are open;
    // everything else needs the token.
    for path in [
        "/healthz",
        "/",
        "/console/app.js",
        "/console/app.css",
        "/openapi.json",
        "/docs/",
    ] {
        let r = client().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = client().get(s.url("/")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(r.text().await.unwrap().contains("/console/app.js"));
    let r = client()
        .get(s.url("/console/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for path in [
        "/api/v1/tables",
        "/api/v1/tables/shop/sales",
        "/metrics",
        "/api/v1/plan",
        "/api/v1/watch",
        "/catalog/v1/config",
    ] {
        let r = client().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "unauthorized");
    }
    let r = client()
        .get(s.url("/api/v1/tables"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Tables, one table, its snapshots.
    let (code, v) = json(s.get("/api/v1/tables")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v[0]["namespace"], "shop");
    assert_eq!(v[0]["name"], "sales");
    assert_eq!(v[0]["total_records"], 30);
    let (code, t) = json(s.get("/api/v1/tables/shop/sales")).await;
    assert_eq!(code, 200, "{t}");
    let names: Vec<&str> = t["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "ts", "region", "qty"]);
    assert_eq!(t["partition_spec"][0], "ts_day = day(ts)");
    let (code, v) = json(s.get("/api/v1/tables/shop/nope")).await;
    assert_eq!((code, v["code"].as_str()), (404, Some("no_such_table")));
    let (code, snaps) = json(s.get("/api/v1/tables/shop/sales/snapshots")).await;
    assert_eq!(code, 200);
    assert_eq!(snaps[0]["annotation"]["change"], "ingest");

    // Upload: appended once per Idempotency-Key.
    let before = rows(&s).await;
    let body = upload_csv(1000, 5);
    let up = |key: &str| {
        s.post("/api/v1/tables/shop/sales/upload")
            .header("Content-Type", "text/csv")
            .header("Idempotency-Key", key)
            .body(body.clone())
    };
    let (code, v) = json(up("k-1")).await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        (v["appended"].as_bool(), v["rows"].as_u64()),
        (Some(true), Some(5))
    );
    let snapshot = v["snapshot_id"].as_i64();
    let (code, v) = json(up("k-1")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["appended"], false);
    assert_eq!(v["snapshot_id"].as_i64(), snapshot);
    assert_eq!(rows(&s).await, before + 5);
    // Without a key, the content is the identity.
    let (code, _) = json(
        s.post("/api/v1/tables/shop/sales/upload")
            .body(upload_csv(2000, 3)),
    )
    .await;
    assert_eq!(code, 201);
    let (code, v) = json(
        s.post("/api/v1/tables/shop/sales/upload")
            .body(upload_csv(2000, 3)),
    )
    .await;
    assert_eq!((code, v["appended"].as_bool()), (200, Some(false)));
    assert_eq!(rows(&s).await, before + 8);
    // JSON lines.
    let (code, v) = json(
        s.post("/api/v1/tables/shop/sales/upload?format=json")
            .body("{\"id\": 3000, \"region\": \"us\", \"qty\": 4}\n"),
    )
    .await;
    assert_eq!(code, 201, "{v}");

    // An upsert by key: 1000 (uploaded above) replaced, 5000 new; once per key.
    let upsert = || {
        s.post("/api/v1/tables/shop/sales/upload?mode=upsert&key=id")
            .header("Idempotency-Key", "u-1")
            .body("id,ts,region,qty\n1000,2024-03-01T10:00:00Z,us,77\n5000,2024-03-02T10:00:00Z,eu,1\n")
    };
    let (code, v) = json(upsert()).await;
    assert_eq!((code, v["rows"].as_u64()), (201, Some(2)), "{v}");
    let (code, v) = json(upsert()).await;
    assert_eq!((code, v["appended"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(rows(&s).await, before + 10);
    let (code, v) = json(
        s.get("/api/v1/query")
            .query(&[("sql", "select region, qty from shop.sales where id = 1000")]),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["rows"], serde_json::json!([{"region": "us", "qty": 77}]));
    let (code, v) = json(
        s.post("/api/v1/tables/shop/sales/upload?mode=merge")
            .body("id\n1\n"),
    )
    .await;
    assert_eq!((code, v["code"].as_str()), (400, Some("bad_mode")), "{v}");

    // A bad row: 422 naming line and column, nothing committed.
    let current = json(s.get("/api/v1/tables/shop/sales")).await.1["current_snapshot_id"].clone();
    let (code, v) = json(s.post("/api/v1/tables/shop/sales/upload").body(
        "id,ts,region,qty\n4000,2024-03-01T10:00:00Z,eu,1\n4001,2024-03-01T10:00:00Z,eu,lots\n",
    ))
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["code"], "bad_rows");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(":3:4:") && msg.contains("lots"), "{msg}");
    assert_eq!(
        json(s.get("/api/v1/tables/shop/sales")).await.1["current_snapshot_id"],
        current
    );
    // A header with no column of the table (a semicolon-delimited file, or not CSV at
    // all): 422 at line 1, not rows of nulls appended.
    for body in ["id;ts;region;qty\n5000;2024-03-01T10:00:00Z;eu;1\n", "{}"] {
        let (code, v) = json(s.post("/api/v1/tables/shop/sales/upload").body(body)).await;
        assert_eq!(code, 422, "{body}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(":1:1:") && msg.contains("is a column of the table"),
            "{msg}"
        );
    }
    assert_eq!(
        json(s.get("/api/v1/tables/shop/sales")).await.1["current_snapshot_id"],
        current
    );

    // Size limit: 413, nothing committed.
    let big = upload_csv(10_000, 60_000);
    assert!(big.len() > 1 << 20);
    let (code, v) = json(s.post("/api/v1/tables/shop/sales/upload").body(big)).await;
    assert_eq!((code, v["code"].as_str()), (413, Some("too_large")), "{v}");
    assert_eq!(
        json(s.get("/api/v1/tables/shop/sales")).await.1["current_snapshot_id"],
        current
    );

    // Query: GET and POST, json / csv / arrow, limit, refused writes.
    let (code, v) = json(s.post("/api/v1/query").json(&serde_json::json!({
        "sql": "select id from shop.sales order by id", "limit": 10
    })))
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 10);
    assert_eq!(v["truncated"], true);
    let (_, v) = json(
        s.get("/api/v1/query")
            .query(&[("sql", "select id from shop.sales")]),
    )
    .await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 20, "server max rows");
    assert_eq!(v["truncated"], true);
    let r = s
        .get("/api/v1/query")
        .query(&[("sql", "select 1 as a, 'x' as b"), ("format", "csv")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "a,b\n1,x\n");
    let r = s
        .get("/api/v1/query")
        .query(&[
            ("sql", "select count(*) as n from shop.sales"),
            ("format", "arrow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    for sql in [
        "insert into shop.sales values (1, null, 'eu', 1)",
        "create table t as select 1",
        "copy (select 1) to '/tmp/lakectl-copy.csv'",
        "drop table shop.sales",
        "set datafusion.execution.batch_size = 1",
        "select * from '/etc/hostname'",
    ] {
        let (code, v) = json(s.get("/api/v1/query").query(&[("sql", sql)])).await;
        assert_eq!(
            (code, v["code"].as_str()),
            (400, Some("bad_query")),
            "{sql}: {v}"
        );
    }
    assert!(!std::path::Path::new("/tmp/lakectl-copy.csv").exists());
    // A query past the timeout is cancelled with 408; the server goes on serving.
    let before_timeout = rows(&s).await;
    let t = std::time::Instant::now();
    let (code, v) = json(s.get("/api/v1/query").query(&[(
        "sql",
        "select count(*) from range(1, 1000000000000) where value % 7 = 3",
    )]))
    .await;
    assert_eq!((code, v["code"].as_str()), (408, Some("timeout")), "{v}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(rows(&s).await, before_timeout);

    // Rollback through the API, then time travel to before it.
    let n = rows(&s).await;
    let (code, v) = json(
        s.post("/api/v1/tables/shop/sales/rollback")
            .json(&serde_json::json!({"steps": 1})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["committed"], true);
    assert_eq!(rows(&s).await, n - 1);
    let (code, v) = json(
        s.post("/api/v1/tables/shop/sales/rollback")
            .json(&serde_json::json!({"steps": 1, "to": 5})),
    )
    .await;
    assert_eq!((code, v["code"].as_str()), (400, Some("bad_target")));

    // The plan of the served manifests: the rolled-back upload is not a manifest change.
    let (code, v) = json(s.get("/api/v1/plan")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["format_version"], "1");
    let r = s.get("/api/v1/plan?format=text").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let plan_text = r.text().await.unwrap();
    assert!(
        plan_text.contains("No changes") || plan_text.contains("held back"),
        "{plan_text}"
    );
    let (code, v) = json(s.get("/api/v1/plan?format=yaml")).await;
    assert_eq!((code, v["code"].as_str()), (400, Some("bad_format")));
    // No watcher configured: the console says so.
    let (code, v) = json(s.get("/api/v1/watch")).await;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_configured")));

    // OpenAPI and docs.
    let (code, api) = json(s.get("/openapi.json")).await;
    assert_eq!(code, 200);
    for path in [
        "/healthz",
        "/api/v1/tables",
        "/api/v1/tables/{namespace}/{table}",
        "/api/v1/tables/{namespace}/{table}/snapshots",
        "/api/v1/tables/{namespace}/{table}/rollback",
        "/api/v1/tables/{namespace}/{table}/upload",
        "/api/v1/query",
        "/api/v1/plan",
        "/api/v1/watch",
    ] {
        assert!(
            api["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    let r = s.get("/docs/").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));
    let m = s
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("lakectl_http_requests_total{route=\"/api/v1/tables/{namespace}/{table}/upload\",status=\"201\"}"),
        "{m}"
    );
    assert!(m.contains("lakectl_uploads_total 4"), "{m}");
}

#[tokio::test]
async fn concurrent_uploads_to_one_table_all_land_once() {
    let p = project();
    let s = serve(&p, &[]);
    let before = rows(&s).await;
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let req = s
            .post("/api/v1/tables/shop/sales/upload")
            .header("Idempotency-Key", format!("batch-{i}"))
            .body(upload_csv(10_000 + i * 100, 100));
        // Each upload is also retried once, concurrently with the others.
        let retry = s
            .post("/api/v1/tables/shop/sales/upload")
            .header("Idempotency-Key", format!("batch-{i}"))
            .body(upload_csv(10_000 + i * 100, 100));
        tasks.push(tokio::spawn(async move {
            let a = req.send().await.unwrap().status().as_u16();
            let b = retry.send().await.unwrap().status().as_u16();
            (a, b)
        }));
    }
    for t in tasks {
        let (a, b) = t.await.unwrap();
        assert!(matches!((a, b), (201, 200)), "{a} {b}");
    }
    assert_eq!(rows(&s).await, before + 800);
    let (_, v) = json(
        s.get("/api/v1/query")
            .query(&[("sql", "select count(distinct id) as d from shop.sales")]),
    )
    .await;
    assert_eq!(v["rows"][0]["d"].as_i64(), Some(before + 800));
}

#[test]
fn a_public_address_needs_a_token() {
    let p = project();
    let out = Command::new(LAKECTL)
        .args(["serve", "--manifests", "manifests", "--addr", "0.0.0.0:0"])
        .env_remove("LAKECTL_TOKEN")
        .current_dir(p.root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("without a token"), "{}", text(&out));
}

/// PyIceberg's RestCatalog and DuckDB's iceberg extension use `lakectl serve` as their
/// Iceberg REST catalog: list, read what lakectl wrote, create, append, evolve, rename;
/// a stale commit is refused; lakectl then reads what PyIceberg wrote.
#[tokio::test]
async fn pyiceberg_and_duckdb_use_the_rest_catalog_endpoint() {
    let p = project();
    let s = serve(&p, &[]);
    let script = crate::common::oracle_dir().join("rest_clients.py");
    let out = crate::common::py(&[script.as_os_str(), s.base.as_ref(), TOKEN.as_ref()]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["namespaces"], serde_json::json!(["shop"]), "{v}");
    assert_eq!(v["tables"], serde_json::json!(["shop.sales"]));
    assert_eq!(v["sales_rows"], 30);
    let qty: i64 = (0..30u64).map(|i| crate::mutate::row(i).2).sum();
    assert_eq!(v["sales_qty"], qty);
    // The stale commit was refused (409), and PyIceberg's retry on fresh metadata landed.
    assert_eq!(v["stale_append"], "retried", "{v}");
    assert_eq!(v["stale_statuses"], serde_json::json!([409, 200]), "{v}");
    assert_eq!(v["py_tables"], serde_json::json!(["py.events2"]));
    assert_eq!(v["events_rows"], 5);
    assert_eq!(
        v["events_fields"],
        serde_json::json!(["id", "name", "extra"])
    );
    assert_eq!(v["duckdb_sales"], serde_json::json!([30, qty]));
    assert_eq!(v["duckdb_events"], 5);

    // lakectl reads the table PyIceberg made through the endpoint.
    let (code, r) = json(
        s.get("/api/v1/query")
            .query(&[("sql", "select count(*) as n, sum(id) as s from py.events2")]),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["rows"][0], serde_json::json!({"n": 5, "s": 109}));
    // REST errors have the spec's shape.
    let (code, e) = json(s.get("/catalog/v1/namespaces/nope/tables/x")).await;
    assert_eq!(code, 404);
    assert_eq!(e["error"]["type"], "NoSuchTableException", "{e}");
    let r = client()
        .get(s.url("/catalog/v1/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the catalog needs the token too");
}

/// lakectl in REST mode (`catalog.type: rest`) against another `lakectl serve`: create,
/// ingest, evolve, mutate, rollback with held-back changes; PyIceberg reads the result
/// through the same endpoint, and the server's own API sees the evolved table.
#[tokio::test]
async fn rest_mode_plans_applies_and_rolls_back_through_a_rest_catalog() {
    let server_side = Project::new();
    let s = serve(&server_side, &[]);
    let catalog = format!("{}/catalog", s.base);
    rest_mode_round_trip(&catalog, Some(TOKEN), None, || async {
        let (code, t) = json(s.get("/api/v1/tables/shop/sales")).await;
        assert_eq!(code, 200, "{t}");
        assert!(t["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "note"));
        assert_eq!(t["fields"][3]["type"], "long");
    })
    .await;
}

/// rustberg, an independent Iceberg REST catalog server (`$LAKECTL_RUSTBERG`, installed
/// by `.ci/run`), on 127.0.0.1 with an in-memory catalog: a `file://` warehouse, or an
/// S3 one on the S3 test server at `s3`. Returns the server and its temporary dir.
async fn rustberg(s3: Option<&str>) -> (Server, tempfile::TempDir) {
    rustberg_at(s3, "s3://lake/warehouse").await
}

/// rustberg as above, with an S3 warehouse at `location` (an `s3://bucket/prefix`).
pub async fn rustberg_at(s3: Option<&str>, location: &str) -> (Server, tempfile::TempDir) {
    let bin = std::env::var_os("LAKECTL_RUSTBERG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/lakectl-tools/bin/rustberg")
        });
    assert!(
        bin.exists(),
        "no rustberg at {} (.ci/run installs it; or set LAKECTL_RUSTBERG)",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--dev",
        "--no-auth",
        "--insecure-http",
        "--host",
        "127.0.0.1",
    ])
    .args(["--port", &port.to_string(), "--catalog-url", "memory://"]);
    match s3 {
        Some(endpoint) => {
            let config = dir.path().join("rustberg.toml");
            std::fs::write(
                &config,
                format!(
                    "[storage]\nwarehouse_location = \"{location}\"\n\n[storage.properties]\n\"s3.endpoint\" = \"{endpoint}\"\n\"s3.region\" = \"us-east-1\"\n\"s3.path-style-access\" = \"true\"\n\"s3.access-key-id\" = \"{}\"\n\"s3.secret-access-key\" = \"{}\"\n",
                    crate::s3::KEY,
                    crate::s3::SECRET
                ),
            )
            .unwrap();
            cmd.arg("--config").arg(config);
        }
        None => {
            cmd.arg("--warehouse")
                .arg(format!("file://{}", dir.path().display()));
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rustberg");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = client().get(server.url("/v1/config")).send().await {
            up = r.status().is_success();
            if up {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "rustberg did not come up on {}", server.base);
    (server, dir)
}

/// The same round trip against rustberg with a `file://` warehouse.
/// OAuth2 client credentials end to end: `serve` issues tokens (valid 1 s here, so
/// they expire during the run and are refreshed) to the clients it knows; lakectl
/// (`credential: id:secret`) and PyIceberg (`RestCatalog(credential=...)`) use them;
/// a wrong secret is refused by name, a token it never issued with 401.
#[tokio::test]
async fn rest_mode_with_oauth2_client_credentials() {
    let server_side = Project::new();
    let s = serve_with(
        &server_side,
        &["--token-ttl", "1s"],
        &[("LAKECTL_CLIENTS", "etl:s3cret,bi:other")],
    );
    let catalog = format!("{}/catalog", s.base);
    // No token, or one it never issued: 401.
    let r = client()
        .get(format!("{catalog}/v1/namespaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{catalog}/v1/namespaces"))
        .bearer_auth("lk-forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A wrong secret: the token endpoint refuses, and lakectl says which client.
    let p = Project::new();
    p.write(
        "lakehouse.yaml",
        &format!("apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: remote}}\nspec:\n  catalog:\n    type: rest\n    uri: {catalog}\n    properties: {{credential: \"etl:wrong\"}}\n  warehouse: ../warehouse\n"),
    );
    p.write("sales.yaml", &sales(true, ""));
    let out = p.run(&["plan", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refused (401 Unauthorized) for client `etl`"),
        "{}",
        text(&out)
    );
    rest_mode_round_trip_as(&catalog, &[("credential", "etl:s3cret")], None, || async {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    })
    .await;
}

#[tokio::test]
async fn rest_mode_against_rustberg() {
    let (server, _dir) = rustberg(None).await;
    rest_mode_round_trip(&server.base, None, None, || async {}).await;
}

/// And against rustberg with an S3 warehouse on the S3 test server.
#[tokio::test]
async fn rest_mode_against_rustberg_with_an_s3_warehouse() {
    let s3 = crate::s3::start(&["lake"]);
    let (server, _dir) = rustberg(Some(&s3.endpoint)).await;
    rest_mode_round_trip(&server.base, None, Some(&s3.endpoint), || async {}).await;
    // Metadata (rustberg's) and data (lakectl's) are on the S3 server.
    crate::s3::assert_metadata_and_data(&s3.endpoint, "lake", Some("warehouse")).await;
}

/// The `warehouse:` and `storage:` lines of a Lakehouse with an S3 warehouse on the S3
/// test server at `endpoint` (the secret through `${env:LAKECTL_TEST_S3_SECRET}`).
fn s3_lines(endpoint: &str) -> String {
    format!(
        "  warehouse: s3://lake/warehouse\n  storage:\n    s3.endpoint: {endpoint}\n    s3.region: us-east-1\n    s3.access-key-id: {}\n    s3.secret-access-key: ${{env:LAKECTL_TEST_S3_SECRET}}\n",
        crate::s3::KEY
    )
}

/// REST mode with an S3 warehouse: `lakectl serve` keeps its metadata on the S3 test
/// server, and lakectl in REST mode writes its data files there.
#[tokio::test]
async fn rest_mode_with_an_s3_warehouse() {
    let s3 = crate::s3::start(&["lake"]);
    let server_side = Project::new();
    server_side.write(
        "lakehouse.yaml",
        &format!(
            "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: s3}}\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:../.lakectl/catalog.db\n{}",
            s3_lines(&s3.endpoint)
        ),
    );
    let s = serve(&server_side, &[]);
    let catalog = format!("{}/catalog", s.base);
    rest_mode_round_trip(&catalog, Some(TOKEN), Some(&s3.endpoint), || async {
        let (code, t) = json(s.get("/api/v1/tables/shop/sales")).await;
        assert_eq!(code, 200, "{t}");
        assert!(
            t["metadata_location"]
                .as_str()
                .unwrap()
                .starts_with("s3://lake/warehouse/"),
            "{t}"
        );
    })
    .await;
}

/// plan/apply (create, ingest, evolve, mutate) and rollback in REST mode against the
/// catalog at `uri` (with an S3 warehouse on the S3 test server at `s3`, else local);
/// `server_check` looks at the result from the server's side.
async fn rest_mode_round_trip<F, Fut>(
    uri: &str,
    token: Option<&str>,
    s3: Option<&str>,
    server_check: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let props: Vec<(&str, &str)> = token.map(|t| ("token", t)).into_iter().collect();
    rest_mode_round_trip_as(
        uri,
        &props,
        s3.map(|e| (e, "s3://lake/warehouse")),
        server_check,
    )
    .await
}

/// [`rest_mode_round_trip`] with these catalog properties (a `token`, a `credential`
/// for OAuth2, SigV4's, each through `${env:…}`), for lakectl and PyIceberg alike, and
/// with an S3 warehouse `(endpoint, warehouse URI)`.
pub async fn rest_mode_round_trip_as<F, Fut>(
    uri: &str,
    catalog_props: &[(&str, &str)],
    s3: Option<(&str, &str)>,
    server_check: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let p = Project::new();
    let props = if catalog_props.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = catalog_props
            .iter()
            .enumerate()
            .map(|(i, (k, _))| format!("\n      {k}: \"${{env:REMOTE_P{i}}}\""))
            .collect();
        format!("\n    properties:{}", lines.concat())
    };
    let warehouse = match s3 {
        Some((endpoint, w)) => s3_lines(endpoint).replace("s3://lake/warehouse", w),
        None => "  warehouse: ../warehouse\n".to_string(),
    };
    let s3 = s3.map(|(e, _)| e);
    p.write(
        "lakehouse.yaml",
        &format!(
            "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: remote}}\nspec:\n  catalog:\n    type: rest\n    uri: {uri}{props}\n{warehouse}"
        ),
    );
    csv(&p.root().join("data/a.csv"), 0, 60);
    p.write("sales.yaml", &sales(true, ""));
    let run = |args: &[&str]| {
        Command::new(LAKECTL)
            .args(args)
            .current_dir(p.root())
            .env("NO_COLOR", "1")
            .envs(
                catalog_props
                    .iter()
                    .enumerate()
                    .map(|(i, (_, v))| (format!("REMOTE_P{i}"), v.to_string())),
            )
            .env("LAKECTL_TEST_S3_SECRET", crate::s3::SECRET)
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    let out = ok(&["apply", "manifests"]);
    assert!(out.contains("✓ create-table shop.sales"), "{out}");
    assert!(out.contains("60 row(s)"), "{out}");
    assert!(ok(&["plan", "manifests"]).contains("No changes"));
    // Evolve and mutate in one apply.
    let evolved = sales(
        true,
        "  policy: {maxMutationShare: 0.5}\n  mutations:\n    - name: zero-eu\n      update: {where: \"region = 'eu'\", set: {qty: 0}}\n",
    )
    .replace(
        "      type: int\n",
        "      type: long\n    - name: note\n      type: string\n",
    );
    p.write("sales.yaml", &evolved);
    let out = ok(&["apply", "manifests"]);
    assert!(out.contains("✓ update-table shop.sales"), "{out}");
    assert!(out.contains("row(s) changed"), "{out}");
    assert!(ok(&["plan", "manifests"]).contains("No changes"));
    let q = |sql: &str| {
        let out = ok(&["query", sql, "--format", "csv"]);
        out.lines().nth(1).unwrap_or_default().to_string()
    };
    let eu = (0..60u64)
        .filter(|i| crate::mutate::row(*i).1 == "eu")
        .count();
    assert_eq!(
        q("select count(*) from shop.sales where qty = 0 and region = 'eu'"),
        eu.to_string()
    );
    server_check().await;

    // Rollback in REST mode: the mutation and the schema change are held back.
    ok(&["rollback", "shop.sales", "--steps", "2"]);
    let plan = text(&run(&["plan", "manifests"]));
    assert!(plan.contains("held back: shop.sales `mutation`"), "{plan}");
    assert!(
        plan.contains("held back: shop.sales `update-table`"),
        "{plan}"
    );
    assert_eq!(
        q("select count(*) from shop.sales where qty = 0"),
        (0..60u64)
            .filter(|i| crate::mutate::row(*i).2 == 0)
            .count()
            .to_string()
    );

    // PyIceberg reads the rolled-back table through the catalog: old schema, old rows.
    let script = r#"
import sys, json
from pyiceberg.catalog.rest import RestCatalog
props = json.loads(sys.argv[2])
if sys.argv[3]:
    props.update({"s3.endpoint": sys.argv[3], "s3.region": "us-east-1",
                  "s3.access-key-id": sys.argv[4], "s3.secret-access-key": sys.argv[5],
                  "s3.force-virtual-addressing": "false"})
t = RestCatalog("x", uri=sys.argv[1], **props).load_table("shop.sales")
a = t.scan().to_arrow()
print(json.dumps({"rows": a.num_rows, "fields": [f.name for f in t.schema().fields]}))
"#;
    let out = crate::common::py(&[
        "-c".as_ref(),
        script.as_ref(),
        uri.as_ref(),
        serde_json::to_string(
            &catalog_props
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap()
        .as_ref(),
        s3.unwrap_or("").as_ref(),
        crate::s3::KEY.as_ref(),
        crate::s3::SECRET.as_ref(),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["rows"], 60);
    assert_eq!(
        v["fields"],
        serde_json::json!(["id", "ts", "region", "qty"])
    );
}
