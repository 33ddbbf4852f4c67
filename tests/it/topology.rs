//! The production stack of `docker-compose.yml`, checked two ways (there is no Docker
//! engine here):
//! - the compose file is parsed and held against the README, the Dockerfile and
//!   `deploy/manifests/lakehouse.yaml` (services, ports, volumes, commands, every
//!   `${env:…}` the lakehouse needs);
//! - the same topology runs as processes on 127.0.0.1: an S3-protocol server (s3s-fs)
//!   with the `warehouse` and `landing` buckets, an Iceberg REST catalog (rustberg) on
//!   it, `lakectl watch --git-pull` on a clone of a git repository holding
//!   `deploy/manifests`, and `lakectl serve` beside it. Commits pushed to the repository
//!   and files landing in S3 reach the table.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde_yaml::Value;

use crate::common::{text, LAKECTL};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `${env:VAR}` names a file uses.
fn env_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${env:") {
        let tail = &rest[i + 6..];
        let end = tail.find('}').expect("closed ${env:");
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn compose_file_matches_the_readme_the_dockerfile_and_the_lakehouse() {
    let mut compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let want: BTreeSet<String> = [
        "minio",
        "minio-init",
        "rest",
        "lakectl-watch",
        "lakectl-serve",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
    let svc = |n: &str| &compose["services"][n];
    let env = |n: &str| -> std::collections::BTreeMap<String, String> {
        let mut e = svc(n)["environment"].clone();
        e.apply_merge().unwrap();
        e.as_mapping()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Bool(b) => b.to_string(),
                            Value::Number(n) => n.to_string(),
                            _ => return None,
                        };
                        Some((k.as_str()?.to_string(), v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    // Published ports, and the README names each with `docker compose up`.
    let ports = |n: &str| strs(&svc(n)["ports"]);
    assert_eq!(ports("minio"), ["9000:9000", "9001:9001"]);
    assert_eq!(ports("rest"), ["8181:8181"]);
    assert_eq!(ports("lakectl-serve"), ["8080:8080"]);
    assert_eq!(ports("lakectl-watch"), ["9090:9090"]);
    let readme = read("README.md");
    assert!(
        readme.contains("docker compose up"),
        "README explains compose"
    );
    for url in [
        "http://localhost:9000",
        "http://localhost:8181",
        "http://localhost:8080",
        "http://localhost:9090",
    ] {
        assert!(readme.contains(url), "README does not mention {url}");
    }

    // watch and serve run lakectl on the mounted manifests, listening where published.
    let watch = strs(&svc("lakectl-watch")["command"]);
    assert_eq!(watch[0], "watch");
    assert!(watch.join(" ").contains("--addr 0.0.0.0:9090"), "{watch:?}");
    let serve = strs(&svc("lakectl-serve")["command"]);
    assert_eq!(serve[0], "serve");
    assert!(serve.join(" ").contains("--addr 0.0.0.0:8080"), "{serve:?}");
    for (n, dir) in [("lakectl-watch", &watch[1]), ("lakectl-serve", &serve[2])] {
        let volumes = strs(&svc(n)["volumes"]);
        assert!(
            volumes.contains(&format!("./deploy/manifests:{dir}")),
            "{n} mounts ./deploy/manifests at {dir}: {volumes:?}"
        );
        assert_eq!(
            svc(n)["build"].as_str(),
            Some("."),
            "{n} builds the Dockerfile"
        );
    }
    assert!(
        env("lakectl-serve").contains_key("LAKECTL_TOKEN"),
        "serve binds 0.0.0.0, which needs a token"
    );

    // Every ${env:VAR} of the lakehouse is set for both lakectl services, and the
    // addresses point at the services that serve them.
    let lakehouse = read("deploy/manifests/lakehouse.yaml");
    let needed = env_vars(&lakehouse);
    assert!(needed.contains("LAKECTL_CATALOG_URI"), "{needed:?}");
    for n in ["lakectl-watch", "lakectl-serve"] {
        let e = env(n);
        for v in &needed {
            assert!(e.contains_key(v), "{n} does not set {v}: {e:?}");
        }
        assert_eq!(e["LAKECTL_CATALOG_URI"], "http://rest:8181");
        assert_eq!(e["LAKECTL_S3_ENDPOINT"], "http://minio:9000");
    }
    let rest = env("rest");
    assert_eq!(rest["CATALOG_S3_ENDPOINT"], "http://minio:9000");
    assert_eq!(rest["CATALOG_WAREHOUSE"], "s3://warehouse/");
    assert_eq!(
        env("lakectl-watch")["AWS_ACCESS_KEY_ID"],
        env("minio")["MINIO_ROOT_USER"]
    );

    // The one-shot makes every bucket the manifests use.
    let init = strs(&svc("minio-init")["entrypoint"]).join(" ");
    let manifests = lakehouse.clone() + &read("deploy/manifests/orders.yaml");
    for bucket in ["warehouse", "landing"] {
        assert!(manifests.contains(&format!("s3://{bucket}/")));
        assert!(init.contains(&format!("local/{bucket}")), "{init}");
    }

    // The Dockerfile is multi-stage and its runtime image runs lakectl.
    let docker = read("Dockerfile");
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[1].contains("slim"), "{stages:?}");
    assert!(docker.contains("COPY --from=build /src/target/release/lakectl"));
    assert!(docker.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/lakectl\"]"));
    assert!(docker.contains("EXPOSE 8080 9090"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.email=ci@lakectl.test", "-c", "user.name=ci"])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lakectl ARGS` in `dir` with `env`; returns it and the address it printed.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Kill, String) {
    let mut cmd = Command::new(LAKECTL);
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn lakectl");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_string();
    assert!(base.starts_with("http://"), "{args:?} printed {line:?}");
    (Kill(child), base)
}

async fn until(
    what: &str,
    url: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let s: serde_json::Value = match reqwest::get(url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if ok(&s) {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_compose_topology_runs_as_processes_and_follows_git() {
    let s3 = crate::s3::start(&["warehouse", "landing"]);
    let (rest, _rest_dir) = crate::serve::rustberg_at(Some(&s3.endpoint), "s3://warehouse").await;
    let env = [
        ("LAKECTL_CATALOG_URI", rest.base.as_str()),
        ("LAKECTL_S3_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", crate::s3::KEY),
        ("AWS_SECRET_ACCESS_KEY", crate::s3::SECRET),
        ("LAKECTL_TOKEN", "topology-token"),
        ("NO_COLOR", "1"),
    ];

    // A git repository of manifests (bare, as on a git server), a clone people push
    // from and the clone the watcher follows.
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin.git");
    let author = tmp.path().join("author");
    let deployed = tmp.path().join("deployed");
    std::fs::create_dir_all(&origin).unwrap();
    git(
        &origin,
        &["init", "--bare", "--quiet", "--initial-branch=main"],
    );
    git(
        tmp.path(),
        &["clone", "--quiet", origin.to_str().unwrap(), "author"],
    );
    std::fs::create_dir_all(author.join("manifests")).unwrap();
    std::fs::write(
        author.join("manifests/lakehouse.yaml"),
        read("deploy/manifests/lakehouse.yaml"),
    )
    .unwrap();
    git(&author, &["add", "-A"]);
    git(&author, &["commit", "--quiet", "-m", "lakehouse"]);
    git(&author, &["push", "--quiet", "origin", "HEAD:main"]);
    git(
        tmp.path(),
        &["clone", "--quiet", origin.to_str().unwrap(), "deployed"],
    );

    let (_watch, watch_url) = spawn(
        &deployed,
        &[
            "watch",
            "manifests",
            "--interval",
            "2s",
            "--git-pull",
            "500ms",
            "--addr",
            "127.0.0.1:0",
        ],
        &env,
    );
    let (_serve, serve_url) = spawn(
        &deployed,
        &["serve", "--manifests", "manifests", "--addr", "127.0.0.1:0"],
        &env,
    );
    let status = format!("{watch_url}/status");

    // 1. A table manifest pushed to git: the watcher pulls it and creates the table.
    std::fs::write(
        author.join("manifests/orders.yaml"),
        read("deploy/manifests/orders.yaml"),
    )
    .unwrap();
    git(&author, &["add", "-A"]);
    git(&author, &["commit", "--quiet", "-m", "orders"]);
    git(&author, &["push", "--quiet", "origin", "HEAD:main"]);
    let head = git(&author, &["rev-parse", "HEAD"]);
    until("the pushed table is created", &status, |s| {
        s["git"]["commit"] == head.as_str()
            && s["tables"]["sales.orders"]["condition"] == "Ready"
            && s["tables"]["sales.orders"]["last_applied_snapshot"].is_i64()
    })
    .await;

    // 2. A CSV landing in S3 is ingested within a resync.
    let landing = crate::s3::client(&s3.endpoint, "landing");
    let mut csv = String::from("id,ts,region,qty,price\n");
    for i in 0..50 {
        csv.push_str(&format!(
            "{i},2024-05-0{}T10:00:00Z,eu,{},2.50\n",
            1 + i % 3,
            i % 7
        ));
    }
    landing
        .put(&ObjectPath::from("orders/day1.csv"), PutPayload::from(csv))
        .await
        .unwrap();
    let query = |sql: &str| {
        let url = format!("{serve_url}/api/v1/query");
        let sql = sql.to_string();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth("topology-token")
                .json(&serde_json::json!({"sql": sql}))
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let t = Instant::now();
    loop {
        let r = query("select count(*) as n from sales.orders").await;
        if r["rows"][0][0] == 50 || r["rows"][0]["n"] == 50 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "not ingested: {r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // 3. A schema change pushed to git is applied, annotated with its commit.
    let edited = read("deploy/manifests/orders.yaml").replace(
        "    - name: price\n      type: decimal(12, 2)\n",
        "    - name: price\n      type: decimal(12, 2)\n    - name: channel\n      type: string\n",
    );
    std::fs::write(author.join("manifests/orders.yaml"), edited).unwrap();
    git(
        &author,
        &["commit", "--quiet", "-am", "orders: add channel"],
    );
    git(&author, &["push", "--quiet", "origin", "HEAD:main"]);
    let head = git(&author, &["rev-parse", "HEAD"]);
    until("the pushed schema change is applied", &status, |s| {
        s["git"]["commit"] == head.as_str()
            && s["tables"]["sales.orders"]["condition"] == "Ready"
            && s["tables"]["sales.orders"]["reason"] == "UpToDate"
    })
    .await;
    let out = Command::new(LAKECTL)
        .args(["history", "sales.orders", "--output", "json"])
        .current_dir(&deployed)
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let history = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        history.contains(&head) && history.contains("add column channel"),
        "the change carries its git commit {head}:\n{history}"
    );
    let r = query("select count(*) as n, count(channel) as c from sales.orders").await;
    assert!(r.to_string().contains("50"), "{r}");

    // The metadata (the catalog's) and the data (lakectl's) are in the warehouse bucket.
    crate::s3::assert_metadata_and_data(&s3.endpoint, "warehouse", None).await;

    // 4. The watcher's status as `lakectl status` prints it.
    let out = Command::new(LAKECTL)
        .args(["status", "--url", &watch_url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sales.orders"), "{}", text(&out));
}
