//! The web console in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver's W3C WebDriver API (plain HTTP, with reqwest), against `lakectl serve`
//! (token set) on the bundled retail example, with a `lakectl watch` beside it. What the
//! page shows is checked against the API's own answers; screenshots are kept under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_port, Project};
use crate::serve::{json, serve, TOKEN};

/// A copy of `examples/retail` (manifests and data), applied.
fn retail() -> Project {
    let p = Project::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail");
    for dir in ["manifests", "data"] {
        for entry in walkdir::WalkDir::new(example.join(dir)) {
            let entry = entry.unwrap();
            let rel = entry.path().strip_prefix(&example).unwrap();
            let to = p.root().join(rel);
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(entry.path(), &to).unwrap();
            }
        }
    }
    p.apply_converges();
    p
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (`.ci/run` does), or set {var}",
        path.display()
    );
    path
}

/// ChromeDriver and one headless Chromium session (both killed on drop).
struct Browser {
    driver: Child,
    url: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver leads its own process group, Chromium's processes with it.
        // SAFETY: killpg only sends a signal to the process group this test started.
        unsafe {
            libc::killpg(self.driver.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        let chromium = tool("LAKECTL_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("LAKECTL_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                shots.join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap(),
            profile,
            shots,
        };
        let t = Instant::now();
        loop {
            let ready = match b.http.get(format!("{}/status", b.url)).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1400,1100",
                    format!("--user-data-dir={}", b.profile.path().display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", caps).await;
        let id = v["sessionId"].as_str().expect("session id").to_string();
        b.url = format!("{}/session/{id}", b.url);
        b
    }

    /// One WebDriver command; its `value`. Panics with WebDriver's error.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r = req.send().await.expect("webdriver request");
        let status = r.status();
        let v: Value = r.json().await.expect("webdriver json");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits (at most 20 s) until `script` returns something truthy; returns it.
    async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let t = Instant::now();
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false))
                && v != json!("")
                && v != json!(0)
                && v != json!([]);
            if truthy {
                return v;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let body = self.js("return document.body.innerText", json!([])).await;
                eprintln!("{what}: not within 20 s; the page says:\n{body}");
                self.shot("failed").await;
                panic!("{what}: not within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element `css` matches, once there is one.
    async fn text(&self, css: &str) -> String {
        self.until(
            css,
            "const e = document.querySelector(arguments[0]); return e && e.innerText",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
    }

    async fn element(&self, css: &str) -> String {
        self.until(
            css,
            "return document.querySelector(arguments[0]) !== null",
            json!([css]),
        )
        .await;
        let v = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// A real click (WebDriver's pointer actions on the element's centre).
    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call("POST", &format!("/element/{e}/click"), json!({}))
            .await;
    }

    /// Clears `css` and types `text` into it, key by key.
    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call("POST", &format!("/element/{e}/clear"), json!({}))
            .await;
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `name.png`; checks it is one.
    async fn shot(&self, name: &str) {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name}: not a screenshot"
        );
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    async fn quit(self) {
        self.call("DELETE", "", Value::Null).await;
    }
}

/// The API's answer to `r`, which must be a 200.
async fn ok(r: reqwest::RequestBuilder) -> Value {
    let (code, v) = json(r).await;
    assert_eq!(code, 200, "{v}");
    v
}

fn field_id(table: &Value, path: &str) -> i64 {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("no column {path}"))["id"]
        .as_i64()
        .unwrap()
}

fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let p = retail();
    let w = crate::watch::watch(&p, &[]);
    crate::watch::until(&w, "the watcher reconciled", |s| {
        s["tables"]["sales.orders"]["condition"] == "Ready"
    })
    .await;
    let s = serve(&p, &["--watch-status", w.base()]);
    let orders = ok(s.get("/api/v1/tables/sales/orders")).await;
    let snaps = ok(s.get("/api/v1/tables/sales/orders/snapshots")).await;
    let snaps = snaps.as_array().unwrap();
    assert!(
        snaps.len() >= 2,
        "the example makes several snapshots: {snaps:?}"
    );

    let b = Browser::start().await;
    b.goto(&format!("{}/", s.base)).await;

    // The token prompt: a wrong token is refused and asked again; the right one is kept.
    b.until(
        "the token prompt",
        "return document.querySelector('#token-dialog').open",
        json!([]),
    )
    .await;
    b.shot("01-token-prompt").await;
    b.type_into("#token-input", "not-the-token").await;
    b.click("#token-submit").await;
    let refused = b.text("#token-dialog[open] #token-error").await;
    assert!(refused.contains("refused"), "{refused}");
    b.type_into("#token-input", TOKEN).await;
    b.click("#token-submit").await;

    // The tables list: every table of the catalog, with its row count.
    let listed = b
        .until(
            "the tables list",
            "const a = [...document.querySelectorAll('#tables a')]; return a.length && a.map(x => x.dataset.table)",
            json!([]),
        )
        .await;
    assert_eq!(listed, json!(["sales.customers", "sales.orders"]));
    let row = b.text("#tables a[data-table='sales.orders'] .rows").await;
    assert_eq!(digits(&row), orders["total_records"].to_string(), "{row}");

    // The overview: the plan (nothing to do), no drift, the watcher's conditions.
    let summary = b.text("#plan-summary").await;
    assert!(summary.starts_with("No changes"), "{summary}");
    // The text plan, fetched when its section is opened, is what `lakectl plan` prints.
    b.click("#plan details summary").await;
    let text = b
        .until(
            "the text plan",
            "const t = document.querySelector('#plan-text').innerText; return t !== 'planning…' && t",
            json!([]),
        )
        .await;
    assert!(
        text.as_str()
            .unwrap()
            .contains("No changes. The lakehouse matches the manifests."),
        "{text}"
    );
    let cond = b.text("#watch tr[data-table='sales.orders'] .badge").await;
    assert_eq!(cond, "Ready");
    b.shot("02-overview").await;

    // sales.orders: the schema with field ids (nested ones too) and docs, as the API has it.
    b.click("#tables a[data-table='sales.orders']").await;
    assert_eq!(b.text("#table-name").await, "sales.orders");
    let shown = b
        .until(
            "the schema",
            "return [...document.querySelectorAll('#schema tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim()))",
            json!([]),
        )
        .await;
    let expected: Vec<Value> = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let key = orders["identifier_fields"]
                .as_array()
                .unwrap()
                .contains(&c["path"]);
            json!([
                c["id"].to_string(),
                format!(
                    "{}{}",
                    c["name"].as_str().unwrap(),
                    if key { " key" } else { "" }
                ),
                c["type"],
                if c["required"] == true {
                    "required"
                } else {
                    "optional"
                },
                c["doc"].as_str().unwrap_or(""),
            ])
        })
        .collect();
    assert_eq!(shown, Value::Array(expected));
    let paths: Vec<&str> = orders["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"customer.email") && paths.contains(&"attributes.value"),
        "{paths:?}"
    );
    // Nested fields are indented (the page's CSP lets its script set the style).
    let indent = b
        .js(
            "const px = id => parseFloat(getComputedStyle(document.querySelector(`#schema tr[data-field-id='${id}'] td:nth-child(2)`)).paddingLeft); return [px(arguments[0]), px(arguments[1])]",
            json!([field_id(&orders, "id"), field_id(&orders, "customer.email")]),
        )
        .await;
    assert!(indent[1].as_f64() > indent[0].as_f64(), "{indent}");
    let parts = b.text("#partitioning").await;
    assert!(
        parts.contains("day(ts)") && parts.contains("identity(region)"),
        "{parts}"
    );
    assert!(b.text("#sort-order").await.contains("desc"));

    // The timeline: every snapshot, newest first, with lakectl's annotation.
    let timeline = b
        .until(
            "the timeline",
            "return [...document.querySelectorAll('#timeline > li')].map(li => [li.dataset.snapshot, li.querySelector('.annotation').innerText])",
            json!([]),
        )
        .await;
    let timeline = timeline.as_array().unwrap();
    assert_eq!(timeline.len(), snaps.len());
    for (li, snap) in timeline.iter().zip(snaps) {
        assert_eq!(li[0], snap["snapshot_id"].to_string());
        let change = snap["annotation"]["change"].as_str().expect("annotated");
        let text = li[1].as_str().unwrap();
        assert!(text.contains(change), "{text} lacks {change}");
        assert!(
            text.contains(snap["annotation"]["change_id"].as_str().unwrap()),
            "{text}"
        );
    }
    let points = b
        .until(
            "the plot",
            "return document.querySelectorAll('#chart-rows circle').length",
            json!([]),
        )
        .await;
    let in_main = snaps.iter().filter(|x| x["in_main"] == true).count();
    assert_eq!(points, json!(in_main));
    b.shot("03-table").await;

    // Rollback: the dry run's diff first (nothing committed), then the confirmation.
    let current = orders["current_snapshot_id"].clone();
    let target = snaps
        .iter()
        .find(|x| x["in_main"] == true && x["current"] == false)
        .unwrap();
    let target_id = target["snapshot_id"].to_string();
    let dry = ok(s
        .post("/api/v1/tables/sales/orders/rollback")
        .json(&json!({"to": target["snapshot_id"], "dry_run": true})))
    .await;
    b.click(&format!(
        "#timeline li[data-snapshot='{target_id}'] button.rollback"
    ))
    .await;
    let rows = b.text("#rollback-diff #rollback-rows").await;
    assert_eq!(
        digits(&rows),
        format!("{}{}", dry["rows_before"], dry["rows_after"]),
        "{rows}"
    );
    let held = b.text("#rollback-diff #rollback-held").await;
    assert!(!dry["held_back"].as_array().unwrap().is_empty(), "{dry}");
    for h in dry["held_back"].as_array().unwrap() {
        assert!(held.contains(h["details"].as_str().unwrap()), "{held}");
    }
    let still = ok(s.get("/api/v1/tables/sales/orders")).await;
    assert_eq!(still["current_snapshot_id"], current, "a dry run committed");
    b.shot("04-rollback-dry-run").await;
    b.click("#rollback-confirm").await;
    b.text("#rollback-done").await;
    let after = ok(s.get("/api/v1/tables/sales/orders")).await;
    assert_eq!(after["current_snapshot_id"], target["snapshot_id"]);
    b.click("#rollback-cancel").await;
    // The undone snapshot is marked rolled back and held back.
    let undone = current.to_string();
    let classes = b
        .until(
            "the undone snapshot marked",
            "const li = document.querySelector(`#timeline li[data-snapshot='${arguments[0]}']`); return li && li.classList.contains('off-main') && li.innerText",
            json!([undone]),
        )
        .await;
    let classes = classes.as_str().unwrap();
    assert!(
        classes.contains("rolled back") && classes.contains("held back"),
        "{classes}"
    );
    b.js(
        "document.querySelector('#history').scrollIntoView()",
        json!([]),
    )
    .await;
    b.shot("05-rolled-back").await;

    // A query returns rows, as the API returns them.
    let sql = "select region, count(*) as orders from sales.orders group by region order by region";
    b.goto(&format!("{}/#/query", s.base)).await;
    b.type_into("#sql", sql).await;
    b.click("#run-query").await;
    let cells = b
        .until(
            "the results",
            "return [...document.querySelectorAll('#results-table tbody tr')].map(r => [...r.cells].map(c => c.innerText))",
            json!([]),
        )
        .await;
    let want = ok(s.post("/api/v1/query").json(&json!({ "sql": sql }))).await;
    let want: Vec<Value> = want["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!([
                r["region"].as_str().unwrap_or("null"),
                r["orders"].to_string()
            ])
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(cells, Value::Array(want));
    b.shot("06-query").await;

    // SQL that fails shows the server's message.
    b.type_into("#sql", "delete from sales.orders").await;
    b.click("#run-query").await;
    let err = b.text("#query-error").await;
    let (code, refused) = json(
        s.post("/api/v1/query")
            .json(&json!({"sql": "delete from sales.orders"})),
    )
    .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(err, refused["message"].as_str().unwrap());
    let n = ok(s
        .post("/api/v1/query")
        .json(&json!({"sql": "select count(*) as n from sales.orders"})))
    .await;
    assert_eq!(n["rows"][0]["n"], dry["rows_after"]);

    // Asked once: a new page load in this tab finds the token and does not ask again.
    b.goto(&format!("{}/?again#/", s.base)).await;
    b.text("#tables a[data-table='sales.orders']").await;
    b.text("#plan-summary").await;
    let asked = b
        .js(
            "return document.querySelector('#token-dialog').open",
            json!([]),
        )
        .await;
    assert_eq!(asked, json!(false), "the token was asked for again");
    b.quit().await;
}
