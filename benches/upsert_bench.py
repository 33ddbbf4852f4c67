#!/usr/bin/env python3
"""Upsert benchmark (not a test): lakectl vs PyIceberg 0.12 vs Spark 3.5 MERGE INTO,
whole processes, each on its own identical copy of the table, same run.

  upsert_bench.py LAKECTL_BINARY [ROWS=10000000] [BATCH=1000000] [--runs N]
                  [--no-pyiceberg] [--no-spark] [--pyiceberg-timeout SECONDS]

A table of ROWS rows (id, name, tier, ts, balance; key `id`; files of about 4 MiB)
made by lakectl from one CSV; a batch CSV of BATCH rows: 10% existing keys spread at
random, 90% new keys. lakectl applies it as an `upsert` source; PyIceberg runs
`table.upsert(df, join_cols=["id"])` on the batch read with pyarrow; Spark runs
`MERGE INTO … WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *` over the
CSV (local[2], ../shared/spark/). Reports wall (median of --runs), cpu/wall and peak
RSS of the whole process tree (sampled from /proc: Spark's JVM included), and checks every copy ends with the same count and sums (DuckDB reads each).
Then a clustered batch (updates to the newest keys only): lakectl's files rewritten
against the files in the table.

Env: LAKECTL_PYTHON (PyIceberg + DuckDB), SPARK_PYTHON and LAKECTL_SPARK_JARS.
"""
import argparse, glob, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("lakectl"); ap.add_argument("rows", nargs="?", type=int, default=10_000_000)
ap.add_argument("batch", nargs="?", type=int, default=1_000_000)
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--no-pyiceberg", action="store_true"); ap.add_argument("--no-spark", action="store_true")
ap.add_argument("--pyiceberg-timeout", type=int, default=3600)
a = ap.parse_args()
lakectl = os.path.abspath(a.lakectl)
here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")
python = os.environ.get("LAKECTL_PYTHON", os.path.expanduser("~/.cache/lakectl-venv/bin/python"))
work = tempfile.mkdtemp(prefix="lakectl-upsert-")

import duckdb  # noqa: E402  (the reader env's DuckDB)

sys.path.insert(0, os.path.join(shared, "oracle"))
from read import duck  # noqa: E402

existing = a.batch // 10
fresh = a.batch - existing
seed = os.path.join(work, "seed.csv")
spread = os.path.join(work, "spread.csv")
clustered = os.path.join(work, "clustered.csv")
gen = duckdb.connect()
gen.execute("select setseed(0.42)")
gen.execute(f"""copy (select range as id, 'c' || range as name, (range % 4)::int as tier,
    timestamp '2024-01-01' + to_seconds(range % 2592000) as ts, (range % 1000) * 1.5 as balance
    from range({a.rows})) to '{seed}' (header)""")
def batch(path, keys_sql):
    gen.execute(f"""copy (select id, 'u' || id as name, (hash(id) % 7)::int as tier,
        timestamp '2024-02-01' + to_seconds(hash(id) % 86400) as ts, (hash(id) % 100000) / 4.0 as balance
        from ({keys_sql}) order by hash(id + 7)) to '{path}' (header)""")
batch(spread, f"""select id from (select range as id from range({a.rows})) using sample {existing} rows (reservoir, 42)
    union all select range as id from range({a.rows}, {a.rows + fresh})""")
batch(clustered, f"""select range as id from range({a.rows - existing}, {a.rows + fresh})""")

MANIFEST = """apiVersion: lakectl/v1
kind: Table
metadata: {{name: t, namespace: bench}}
spec:
  columns:
    - {{name: id, type: long, required: true}}
    - {{name: name, type: string}}
    - {{name: tier, type: int}}
    - {{name: ts, type: timestamp}}
    - {{name: balance, type: double}}
  identifierFields: [id]
  properties:
    write.target-file-size-bytes: "4194304"
  sources:
    - {{name: seed, uri: {seed}}}
    - {{name: feed, uri: ../feed/*.csv, mode: upsert, key: [id]}}
"""


def copy(name):
    root = os.path.join(work, name)
    os.makedirs(os.path.join(root, "manifests")); os.makedirs(os.path.join(root, "feed"))
    with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
        f.write(MANIFEST.format(seed=seed))
    subprocess.run([lakectl, "apply", "manifests"], cwd=root, check=True, capture_output=True)
    return root


sys.path.insert(0, here)
from proctree import timed  # noqa: E402


def metadata(root):
    db = os.path.join(root, ".lakectl", "catalog.db")
    return sqlite3.connect(db).execute(
        "select metadata_location from iceberg_tables where table_name = 't'").fetchone()[0]


def totals(root):
    con = duck()
    return con.execute(f"select count(*), sum(id), sum(tier), round(sum(balance), 2) from iceberg_scan('{metadata(root)}')").fetchone()


def snapshot_summary(root):
    meta = json.load(open(metadata(root).removeprefix("file://")))
    cur = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    return cur["summary"]


PYICEBERG = r"""
import sys, pyarrow.csv as pc
from pyiceberg.catalog.sql import SqlCatalog
t = SqlCatalog("lakectl", uri=f"sqlite:///{sys.argv[1]}").load_table("bench.t")
schema = t.schema().as_arrow()
df = pc.read_csv(sys.argv[2], convert_options=pc.ConvertOptions(column_types=schema)).select(schema.names).cast(schema)
r = t.upsert(df, join_cols=["id"])
print(r.rows_updated, r.rows_inserted)
"""

def run_lakectl(root, batch_file):
    shutil.copy(batch_file, os.path.join(root, "feed", "batch.csv"))
    return timed([lakectl, "apply", "manifests"], cwd=root)


def run_pyiceberg(root, batch_file):
    return timed([python, "-c", PYICEBERG, os.path.join(root, ".lakectl", "catalog.db"), batch_file],
                 timeout=a.pyiceberg_timeout)


def run_spark(root, batch_file):
    env = dict(os.environ)
    spark_py = env["SPARK_PYTHON"]
    schema = "id BIGINT, name STRING, tier INT, ts TIMESTAMP, balance DOUBLE"
    return timed([spark_py, os.path.join(shared, "spark", "sql.py"),
                  "--jdbc", os.path.join(root, ".lakectl", "catalog.db"),
                  "--warehouse", os.path.join(root, ".lakectl", "warehouse"),
                  f"CREATE TEMPORARY VIEW b ({schema}) USING csv OPTIONS (path '{batch_file}', header 'true')",
                  "MERGE INTO lk.bench.t t USING b s ON t.id = s.id "
                  "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"], env=env)


engines = [("lakectl", run_lakectl)]
if not a.no_pyiceberg:
    engines.append(("pyiceberg", run_pyiceberg))
if not a.no_spark:
    engines.append(("spark", run_spark))
results = {}
for name, run in engines:
    walls, last = [], None
    for i in range(a.runs if name != "pyiceberg" else 1):
        root = copy(f"{name}-{i}")
        r = run(root, spread)
        if r is None:
            walls = None
            break
        walls.append(r[0]); last = (r, root)
    if walls is None:
        results[name] = None
        print(f"{name}: no result within {a.pyiceberg_timeout} s", flush=True)
        continue
    (wall, ratio, rss, out), root = last
    results[name] = (statistics.median(walls), ratio, rss, totals(root), snapshot_summary(root))
    print(f"{name}: {statistics.median(walls):.1f} s", flush=True)

print(f"\nupsert of {a.batch:,} rows ({existing:,} existing keys at random, {fresh:,} new) into {a.rows:,}")
print(f"{'':<10} {'wall s':>8} {'cpu/wall':>9} {'peak MiB':>9}  files deleted/added  count, sum(id), sum(tier), sum(balance)")
ref = results["lakectl"]
for name, r in results.items():
    if r is None:
        print(f"{name:<10} {'>' + str(a.pyiceberg_timeout):>8}")
        continue
    wall, ratio, rss, tot, summary = r
    files = f"{summary.get('deleted-data-files', 0)}/{summary.get('added-data-files', 0)}"
    print(f"{name:<10} {wall:>8.1f} {ratio:>9.2f} {rss:>9.0f}  {files:>19}  {tot}")
    assert tot == ref[3], f"{name} ends with {tot}, lakectl with {ref[3]}"
for name, r in results.items():
    if name != "lakectl" and r is not None:
        print(f"lakectl is {r[0] / ref[0]:.1f}x faster than {name}")

root = copy("clustered")
wall, ratio, rss, _ = run_lakectl(root, clustered)
s = snapshot_summary(root)
print(f"\nclustered batch (updates to the newest {existing:,} keys, {fresh:,} new): lakectl {wall:.1f} s, "
      f"{s.get('deleted-data-files', 0)} file(s) rewritten of {int(s.get('total-data-files', 0)) - int(s.get('added-data-files', 0)) + int(s.get('deleted-data-files', 0))} in the table, peak {rss:.0f} MiB")
shutil.rmtree(work)
