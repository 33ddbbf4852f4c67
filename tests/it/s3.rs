//! S3: an `s3://` prefix source and an S3 warehouse against a real S3-protocol server
//! on 127.0.0.1 (`s3s-fs`, which checks request signatures), started by the test.
//! Endpoint, region, path-style and keys come from the Lakehouse manifest, the secret
//! through `${env:…}`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::common::{oracle_dir, python, text, Project};

pub const KEY: &str = "lakectl-test";
pub const SECRET: &str = "lakectl-test-secret";

/// The s3s-fs binary: `$LAKECTL_S3S_FS`, or where `.ci/run` installs it.
fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("LAKECTL_S3S_FS") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/lakectl-tools/bin/s3s-fs");
    assert!(
        p.exists(),
        "no s3s-fs: run `cargo install s3s-fs@0.14.1 --locked --features binary --root ~/.cache/lakectl-tools` (or .ci/run), or set LAKECTL_S3S_FS"
    );
    p
}

pub struct Server {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
    /// The served directory: `<dir>/<bucket>/<key>` is an object.
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(buckets: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    for b in buckets {
        std::fs::create_dir_all(dir.path().join(b)).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(s3s_fs())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

/// The keys under `prefix` of `bucket` on the S3 test server.
pub async fn keys(endpoint: &str, bucket: &str, prefix: Option<&str>) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = prefix.map(ObjectPath::from);
    client(endpoint, bucket)
        .list(prefix.as_ref())
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// Asserts that Iceberg metadata and Parquet data are on the S3 test server.
pub async fn assert_metadata_and_data(endpoint: &str, bucket: &str, prefix: Option<&str>) {
    let keys = keys(endpoint, bucket, prefix).await;
    assert!(
        keys.iter().any(|k| k.ends_with(".metadata.json")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.ends_with(".parquet")), "{keys:?}");
}

pub fn client(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(KEY)
            .with_secret_access_key(SECRET)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    )
}

async fn put_csv(store: &Arc<dyn ObjectStore>, key: &str, first: u64, rows: u64) {
    let mut body = String::from("id,ts,region,qty,price\n");
    for i in first..first + rows {
        body.push_str(&format!(
            "{i},2024-03-0{}T10:00:00Z,eu,{},1.5\n",
            1 + i % 3,
            i % 10
        ));
    }
    store
        .put(&ObjectPath::from(key), PutPayload::from(body.into_bytes()))
        .await
        .unwrap();
}

fn manifests(p: &Project, endpoint: &str) {
    p.write(
        "lakehouse.yaml",
        &format!(
            "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata:\n  name: s3\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:../.lakectl/catalog.db\n  warehouse: s3://lake/warehouse\n  storage:\n    s3.endpoint: {endpoint}\n    s3.region: us-east-1\n    s3.path-style-access: \"true\"\n    s3.access-key-id: {KEY}\n    s3.secret-access-key: ${{env:LAKECTL_TEST_S3_SECRET}}\n"
        ),
    );
    p.write(
        "sales.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: sales\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - {name: ts, type: timestamptz}\n    - {name: region, type: string}\n    - {name: qty, type: int}\n    - {name: price, type: double}\n  partitioning:\n    - {column: ts, transform: day}\n  sources:\n    - name: landing\n      uri: s3://src/in/2024/*.csv\n",
    );
}

fn lakectl(p: &Project, args: &[&str], secret: &str) -> std::process::Output {
    Command::new(crate::common::LAKECTL)
        .args(args)
        .current_dir(p.root())
        .env("NO_COLOR", "1")
        .env("LAKECTL_TEST_S3_SECRET", secret)
        .output()
        .unwrap()
}

fn count(p: &Project) -> String {
    let out = lakectl(
        p,
        &[
            "query",
            "select count(*) as n, count(distinct id) as d from shop.sales",
            "--format",
            "csv",
        ],
        SECRET,
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn s3_prefix_source_into_an_s3_warehouse() {
    let server = start(&["lake", "src"]);
    let src = client(&server.endpoint, "src");
    put_csv(&src, "in/2024/a.csv", 0, 300).await;
    put_csv(&src, "in/2024/b.csv", 300, 200).await;
    put_csv(&src, "in/2023/old.csv", 9000, 7).await; // outside the glob
    let p = Project::new();
    manifests(&p, &server.endpoint);

    // A wrong secret is refused by the server's signature check.
    let out = lakectl(&p, &["plan", "manifests"], "wrong-secret");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = lakectl(&p, &["plan", "manifests"], SECRET);
    let plan = text(&out);
    assert_eq!(out.status.code(), Some(2), "{plan}");
    assert!(plan.contains("+ ingest s3://src/in/2024/a.csv"), "{plan}");
    assert!(!plan.contains("old.csv"), "{plan}");
    let out = lakectl(&p, &["apply", "manifests"], SECRET);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&p), "500,500");

    // Data and metadata live in the S3 bucket.
    let lake = client(&server.endpoint, "lake");
    let keys: Vec<String> = {
        use futures::StreamExt;
        let mut s = lake.list(Some(&ObjectPath::from("warehouse/shop/sales")));
        let mut v = Vec::new();
        while let Some(m) = s.next().await {
            v.push(m.unwrap().location.to_string());
        }
        v
    };
    assert!(
        keys.iter()
            .any(|k| k.contains("/data/ts_day=2024-03-01/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with(".metadata.json")),
        "{keys:?}"
    );

    // Nothing new: no changes. A new object: only it.
    let out = lakectl(&p, &["plan", "manifests"], SECRET);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    put_csv(&src, "in/2024/c.csv", 500, 50).await;
    let out = lakectl(&p, &["plan", "manifests"], SECRET);
    let plan = text(&out);
    assert!(
        plan.contains("+ ingest s3://src/in/2024/c.csv") && !plan.contains("a.csv"),
        "{plan}"
    );
    let out = lakectl(&p, &["apply", "manifests"], SECRET);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&p), "550,550");

    // PyIceberg reads the S3 table through the same catalog.
    let script = oracle_dir().join("describe_table.py");
    let out = Command::new(python())
        .arg(script)
        .arg(p.catalog_db())
        .arg("lakectl")
        .arg("shop.sales")
        .env("LAKECTL_S3_ENDPOINT", &server.endpoint)
        .env("LAKECTL_S3_KEY", KEY)
        .env("LAKECTL_S3_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["rows"], 550);
}

/// A prefix of 20,000 objects (written straight into the server's directory): one
/// listing per plan, compared with the ledger by key, size and ETag, a no-op plan once
/// all are ingested; with `listing: lexical` the listing starts after the greatest
/// ingested key, so only keys after it are seen.
#[tokio::test]
async fn a_prefix_of_20000_objects_is_listed_once_and_lexical_listing_starts_after_the_last_key() {
    let server = start(&["src"]);
    let objects = 20_000;
    let dir = server.dir.join("src/in");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..objects {
        std::fs::write(
            dir.join(format!("{i:06}.csv")),
            format!(
                "id,ts,region,qty,price\n{i},2024-03-01T00:00:00Z,eu,{},1.0\n",
                i % 10
            ),
        )
        .unwrap();
    }
    let p = Project::new();
    let lakehouse = |listing: &str| {
        p.write(
            "lakehouse.yaml",
            &format!(
                "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata:\n  name: s3\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:../.lakectl/catalog.db\n  warehouse: ../.lakectl/warehouse\n  storage:\n    s3.endpoint: {}\n    s3.region: us-east-1\n    s3.path-style-access: \"true\"\n    s3.access-key-id: {KEY}\n    s3.secret-access-key: ${{env:LAKECTL_TEST_S3_SECRET}}\n",
                server.endpoint
            ),
        );
        p.write(
            "sales.yaml",
            &format!("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: sales\n  namespace: shop\nspec:\n  columns:\n    - {{name: id, type: long, required: true}}\n    - {{name: ts, type: timestamptz}}\n    - {{name: region, type: string}}\n    - {{name: qty, type: int}}\n    - {{name: price, type: double}}\n  sources:\n    - name: landing\n      uri: s3://src/in/*.csv\n{listing}"),
        );
    };
    lakehouse("");
    let out = lakectl(&p, &["apply", "manifests"], SECRET);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{objects} file(s), {objects} row(s)")),
        "{}",
        text(&out)
    );
    assert_eq!(count(&p), format!("{objects},{objects}"));
    let out = lakectl(&p, &["plan", "manifests"], SECRET);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // New keys after the last one, and one before it.
    let src = client(&server.endpoint, "src");
    for i in [objects + 1, objects + 2] {
        put_csv(&src, &format!("in/{i:06}.csv"), i as u64 * 10, 3).await;
    }
    put_csv(&src, "in/000000-late.csv", 900_000, 3).await;
    let files = |out: &std::process::Output| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
        let mut f: Vec<String> = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["files"].as_array().cloned().unwrap_or_default())
            .map(|f| f["path"].as_str().unwrap_or_default().to_string())
            .collect();
        f.sort();
        f
    };
    // Lexical: one page listed, after the greatest ingested key.
    lakehouse("      listing: lexical\n");
    let out = lakectl(&p, &["plan", "manifests", "--output", "json"], SECRET);
    let after: Vec<String> = [objects + 1, objects + 2]
        .iter()
        .map(|i| format!("s3://src/in/{i:06}.csv"))
        .collect();
    assert_eq!(files(&out), after);
    let out = lakectl(&p, &["apply", "manifests"], SECRET);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(count(&p), format!("{n},{n}", n = objects + 6));
    // Full: every key compared, so the late one under a smaller key is seen.
    lakehouse("");
    let out = lakectl(&p, &["plan", "manifests", "--output", "json"], SECRET);
    assert_eq!(files(&out), vec!["s3://src/in/000000-late.csv".to_string()]);
}
