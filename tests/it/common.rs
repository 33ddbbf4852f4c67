//! Shared fixtures: a temporary project (manifests + embedded lakehouse), running the
//! binary, reading committed metadata, and the Python oracle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lakectl::lake::{Lake, TableState};

pub const LAKECTL: &str = env!("CARGO_BIN_EXE_lakectl");

/// A project folder: `manifests/` and, after an apply, `.lakectl/` beside it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("mkdir");
        Project { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifests(&self) -> PathBuf {
        self.root().join("manifests")
    }

    pub fn write(&self, name: &str, yaml: &str) {
        std::fs::write(self.manifests().join(name), yaml).expect("write manifest");
    }

    pub fn catalog_db(&self) -> PathBuf {
        self.root().join(".lakectl/catalog.db")
    }

    /// Runs `lakectl ARGS` in the project root.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(LAKECTL)
            .args(args)
            .current_dir(self.root())
            .env("NO_COLOR", "1")
            .output()
            .expect("run lakectl")
    }

    /// Starts `lakectl ARGS` whose first commit attempt waits `delay_ms` (the
    /// `LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS` hook), so another writer can commit in
    /// that window; output piped for `wait_with_output`.
    pub fn spawn_with_commit_delay(&self, args: &[&str], delay_ms: u64) -> std::process::Child {
        Command::new(LAKECTL)
            .args(args)
            .current_dir(self.root())
            .env("NO_COLOR", "1")
            .env("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS", delay_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn lakectl")
    }

    /// `lakectl plan manifests`: (exit code, stdout + stderr).
    pub fn plan(&self) -> (i32, String) {
        let out = self.run(&["plan", "manifests"]);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// `lakectl apply manifests`, which must succeed.
    pub fn apply_ok(&self) -> String {
        let out = self.run(&["apply", "manifests"]);
        assert!(out.status.success(), "apply failed:\n{}", text(&out));
        text(&out)
    }

    /// Applies, then checks that a second plan is empty (exit 0, "No changes").
    pub fn apply_converges(&self) -> String {
        let out = self.apply_ok();
        let (code, again) = self.plan();
        assert_eq!(code, 0, "second plan is not empty:\n{again}");
        assert!(again.contains("No changes"), "{again}");
        out
    }

    /// The project's lakehouse, which must exist.
    pub async fn lake(&self) -> Lake {
        let set = lakectl::plan::load_valid(&self.manifests()).expect("valid manifests");
        Lake::open_existing(set.lake_config().expect("config"))
            .await
            .expect("open")
            .expect("catalog exists")
    }

    /// The table as the catalog has it now.
    pub async fn table(&self, name: &str) -> TableState {
        let lake = self.lake().await;
        let (ns, t) = name.split_once('.').expect("ns.table");
        let ident = iceberg::TableIdent::new(iceberg::NamespaceIdent::new(ns.into()), t.into());
        lake.load_table(&ident)
            .await
            .expect("load")
            .expect("table exists")
    }

    /// Makes the embedded catalog with PyIceberg alone, and in it `shop.items` with
    /// three rows (tests/oracle/pyiceberg_create.py).
    pub fn pyiceberg_items(&self) {
        std::fs::create_dir_all(self.root().join(".lakectl")).expect("mkdir");
        let db = self.catalog_db();
        let warehouse = self.root().join(".lakectl/warehouse");
        let script = oracle_dir().join("pyiceberg_create.py");
        py(&[
            script.as_os_str(),
            db.as_os_str(),
            "lakectl".as_ref(),
            warehouse.as_os_str(),
        ]);
    }

    /// What PyIceberg sees of the table (tests/oracle/describe_table.py).
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        inspect(&self.catalog_db(), "lakectl", name)
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Python of the reader env (`../shared/oracle/setup.sh`): `$LAKECTL_PYTHON`, or
/// the venv `.ci/run` makes. Missing is a failure, not a skip: these checks are the
/// independent proof that lakectl writes real Iceberg.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LAKECTL_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cache/lakectl-venv/bin/python");
    assert!(
        p.exists(),
        "no reader env: run `bash ../shared/oracle/setup.sh ~/.cache/lakectl-venv` (or .ci/run), or set LAKECTL_PYTHON"
    );
    p
}

pub fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle")
}

pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Runs a Python script of the reader env; panics with its output when it fails.
pub fn py(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {:?} failed:\n{}",
        args,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn inspect(db: &Path, catalog: &str, table: &str) -> serde_json::Value {
    let script = oracle_dir().join("describe_table.py");
    let out = py(&[
        script.as_os_str(),
        db.as_os_str(),
        catalog.as_ref(),
        table.as_ref(),
    ]);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("describe_table.py printed no JSON ({e}):\n{out}"))
}

/// `../shared/oracle/read.py`: PyIceberg and DuckDB read every snapshot; exit 1 when
/// they disagree. Returns its JSON.
pub fn read_both(db: &Path, table: &str) -> serde_json::Value {
    let script = shared_dir().join("oracle/read.py");
    let out = py(&[
        script.as_os_str(),
        "--sqlite".as_ref(),
        db.as_os_str(),
        "--catalog-name".as_ref(),
        "lakectl".as_ref(),
        "--table".as_ref(),
        table.as_ref(),
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("read.py printed no JSON ({e}):\n{out}"))
}

/// A field of the describe_table.py output by path.
pub fn field<'a>(inspected: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    inspected["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["path"] == path))
        .unwrap_or_else(|| panic!("no field {path} in {}", inspected["fields"]))
}

/// A minimal table manifest: `shop.orders` with the given `spec:` body (indented by 2).
pub fn orders(spec_body: &str) -> String {
    format!(
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n{spec_body}"
    )
}

/// Spark 3.5 + Iceberg 1.10 (`../shared/spark/setup.sh`): `SPARK_PYTHON` and
/// `LAKECTL_SPARK_JARS` as `.ci/run` exports them, or the install under
/// `~/.cache/lakectl-spark` (set up on first use; idempotent).
pub fn spark_env() -> (String, String) {
    if let (Ok(py), Ok(jars)) = (
        std::env::var("SPARK_PYTHON"),
        std::env::var("LAKECTL_SPARK_JARS"),
    ) {
        return (py, jars);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let out = Command::new("bash")
        .arg(shared_dir().join("spark/setup.sh"))
        .arg(format!("{home}/.cache/lakectl-spark"))
        .output()
        .expect("run spark/setup.sh");
    assert!(
        out.status.success(),
        "spark/setup.sh failed:\n{}",
        text(&out)
    );
    let vars = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| {
        vars.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("spark/setup.sh printed no {k}:\n{vars}"))
            .to_string()
    };
    (get("SPARK_PYTHON"), get("LAKECTL_SPARK_JARS"))
}

/// `../shared/spark/sql.py --jdbc DB --warehouse DIR ARGS…` (the catalog registered as
/// `lk`): the JSON it prints last.
fn spark_py(db: &Path, warehouse: &Path, args: &[&str]) -> serde_json::Value {
    let (python, jars) = spark_env();
    let out = Command::new(python)
        .arg(shared_dir().join("spark/sql.py"))
        .arg("--jdbc")
        .arg(db)
        .arg("--warehouse")
        .arg(warehouse)
        .args(args)
        .env("LAKECTL_SPARK_JARS", jars)
        .output()
        .expect("run spark/sql.py");
    assert!(out.status.success(), "spark/sql.py failed:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("spark/sql.py printed no JSON ({e}):\n{stdout}"))
}

/// Runs Spark SQL statements in one session; the rows of the last.
pub fn spark_sql(db: &Path, warehouse: &Path, statements: &[&str]) -> serde_json::Value {
    spark_py(db, warehouse, statements)
}

/// Spark's read of every snapshot of a table (`--read`):
/// `{"snapshots": [{"id", "operation", "rows"}], "schema", "rows"}`.
pub fn spark_read(db: &Path, warehouse: &Path, table: &str) -> serde_json::Value {
    spark_py(db, warehouse, &["--read", table])
}

/// Sets the modification time of every file under `dir` (but those named `except`) to
/// three days ago, past any orphan window.
pub fn age_files(dir: &Path, except: Option<&str>) {
    let mut cmd = Command::new("find");
    cmd.arg(dir).args(["-type", "f"]);
    if let Some(name) = except {
        cmd.args(["!", "-name", name]);
    }
    let status = cmd
        .args(["-exec", "touch", "-d", "3 days ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The rows of `sql` over `lake` with scan `options`, as sorted JSON lines.
pub async fn sorted_rows(
    lake: &Lake,
    sql: &str,
    as_of: Option<lakectl::query::AsOf>,
    options: lakectl::query::ScanOptions,
) -> Vec<String> {
    let (ctx, _) = lakectl::query::session_with(lake, as_of, options)
        .await
        .expect("session");
    let batches = lakectl::query::run(&ctx, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} ({options:?}): {e}"));
    let rendered = lakectl::query::render(&batches, "json").expect("render");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&rendered).expect("json");
    let mut rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
