//! `lakectl watch` as a child process: picks up a new manifest, an edited schema and a
//! new source file without waiting for the resync; a failing table is Degraded and
//! backs off while another reconciles; SIGTERM during a commit leaves the old or the
//! new snapshot and exits; two watchers on one lakehouse apply each file once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{text, Project, LAKECTL};
use crate::mutate::{csv, query, sales};

pub struct Watcher {
    child: Child,
    base: String,
}

impl Watcher {
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn watch(p: &Project, env: &[(&str, &str)]) -> Watcher {
    let mut cmd = Command::new(LAKECTL);
    cmd.args([
        "watch",
        "manifests",
        "--interval",
        "60s",
        "--addr",
        "127.0.0.1:0",
    ])
    .current_dir(p.root())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn watch");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().trim_start_matches("listening on ").to_string();
    Watcher { child, base }
}

pub async fn status_of(w: &Watcher) -> serde_json::Value {
    status(w).await
}

async fn status(w: &Watcher) -> serde_json::Value {
    reqwest::get(format!("{}/status", w.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (at most 20 s: the resync interval is 60 s, so only file events can wake it)
/// until `ok` holds for the status.
pub async fn until(
    w: &Watcher,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let s = status(w).await;
        if ok(&s) {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count(p: &Project) -> i64 {
    query(p, "select count(*) as n from shop.sales", None)[0]["n"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn picks_up_manifests_schema_edits_and_new_files_and_backs_off_a_failing_table() {
    let p = Project::new();
    let w = watch(&p, &[]);
    let s = until(&w, "first cycle", |s| s["cycles"].as_u64() >= Some(1)).await;
    // The 60 s resync cannot wake it in this test: file events from the OS do.
    assert_eq!(s["file_events"], "notify", "{s}");

    // A new manifest.
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(true, ""));
    until(&w, "new manifest", |s| {
        s["tables"]["shop.sales"]["condition"] == "Ready"
    })
    .await;
    assert_eq!(count(&p), 30);

    // An edited schema.
    p.write(
        "sales.yaml",
        &sales(true, "").replace(
            "      type: int\n",
            "      type: int\n    - name: note\n      type: string\n",
        ),
    );
    until(&w, "schema edit", |s| {
        s["tables"]["shop.sales"]["message"] == "applied 1 change(s)"
    })
    .await;
    assert!(p.run(&["plan", "manifests"]).status.success());

    // A second table whose source has a bad row: Degraded, backing off; the first table
    // goes on reconciling (a new file lands).
    std::fs::create_dir_all(p.root().join("bad")).unwrap();
    std::fs::write(p.root().join("bad/x.csv"), "id,qty\n1,2\n2,lots\n").unwrap();
    p.write(
        "bad.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata: {name: bad, namespace: shop}\nspec:\n  columns:\n    - {name: id, type: long}\n    - {name: qty, type: int}\n  sources:\n    - {name: s, uri: ../bad/*.csv}\n",
    );
    let s = until(&w, "degraded", |s| {
        s["tables"]["shop.bad"]["condition"] == "Degraded"
    })
    .await;
    let t = &s["tables"]["shop.bad"];
    assert_eq!(t["reason"], "ApplyFailed", "{t}");
    assert!(
        t["last_error"].as_str().unwrap().contains("x.csv:3:2"),
        "{t}"
    );
    csv(&p.root().join("data/b.csv"), 30, 10);
    until(&w, "good table goes on", |s| {
        s["tables"]["shop.sales"]["condition"] == "Ready"
            && s["tables"]["shop.bad"]["condition"] == "Degraded"
            && s["cycles"].as_u64() >= Some(4)
    })
    .await;
    let t = Instant::now();
    while count(&p) != 40 {
        assert!(t.elapsed() < Duration::from_secs(20), "b.csv never landed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Backoff: failures accumulate, the table is retried, never applied.
    until(&w, "backing off", |s| {
        s["tables"]["shop.bad"]["consecutive_failures"].as_u64() >= Some(2)
    })
    .await;
    // Fixing the file makes it Ready.
    std::fs::write(p.root().join("bad/x.csv"), "id,qty\n1,2\n2,3\n").unwrap();
    until(&w, "fixed", |s| {
        s["tables"]["shop.bad"]["condition"] == "Ready"
    })
    .await;
    let m = reqwest::get(format!("{}/metrics", w.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("lakectl_reconcile_errors_total"), "{m}");
    let out = p.run(&["status", "--url", &w.base]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("shop.bad"), "{}", text(&out));
}

#[tokio::test]
async fn sigterm_during_a_commit_leaves_old_or_new_and_exits() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(true, ""));
    p.apply_converges();
    let before = p.table("shop.sales").await.metadata_location;
    let mut w = watch(&p, &[("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS", "1500")]);
    until(&w, "ready", |s| {
        s["tables"]["shop.sales"]["condition"] == "Ready"
    })
    .await;
    csv(&p.root().join("data/b.csv"), 30, 30);
    until(&w, "progressing", |s| {
        s["tables"]["shop.sales"]["condition"] == "Progressing"
    })
    .await;
    let pid = w.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    let code = loop {
        if let Some(s) = w.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "watch did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0));
    let after = p.table("shop.sales").await;
    let n = count(&p);
    if after.metadata_location == before {
        assert_eq!(n, 30);
    } else {
        assert_eq!(n, 60);
    }
    p.apply_converges();
    assert_eq!(count(&p), 60);
}

#[tokio::test]
async fn two_watchers_apply_each_file_once() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(true, ""));
    let a = watch(&p, &[]);
    let b = watch(&p, &[]);
    for w in [&a, &b] {
        until(w, "ready", |s| {
            s["tables"]["shop.sales"]["condition"] == "Ready"
        })
        .await;
    }
    for i in 1..4u64 {
        csv(&p.root().join(format!("data/n{i}.csv")), 1000 * i, 20);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t = Instant::now();
    loop {
        let (code, plan) = p.plan();
        if code == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{plan}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let v = query(
        &p,
        "select count(*) as n, count(distinct id) as d from shop.sales",
        None,
    );
    assert_eq!(v[0]["n"], 90, "{v:?}");
    assert_eq!(v[0]["d"], 90);
}
