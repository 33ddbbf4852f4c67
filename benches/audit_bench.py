#!/usr/bin/env python3
"""Write-audit-publish benchmark (not a test): what staging, checking and publishing
costs over a direct apply, and lakectl's checks against DuckDB running the same
queries over the same Iceberg table; whole processes, same run.

  audit_bench.py LAKECTL_BINARY [ROWS=10000000] [BATCH=1000000] [--runs N]

A table of ROWS rows (id, region, qty, ts; key `id`) made by lakectl from one CSV,
twice: `publish: direct` without checks, and `publish: audited` with four checks
(`unique: []`, `notNull: [region]`, `acceptedValues` of region, `rowCount` with
`maxChangePercent`). Then a batch CSV of BATCH new rows is applied to fresh copies of
each (--runs copies; median wall). Then `lakectl check` on the audited table against
DuckDB (iceberg_scan of the same metadata file) running the four checks' queries, and
both must find the same counts. Reports wall, cpu/wall and peak RSS of the process tree.

Env: LAKECTL_PYTHON (the reader env: DuckDB with its iceberg extension).
"""
import argparse, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("lakectl"); ap.add_argument("rows", nargs="?", type=int, default=10_000_000)
ap.add_argument("batch", nargs="?", type=int, default=1_000_000)
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
lakectl = os.path.abspath(a.lakectl)
here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")
python = os.environ.get("LAKECTL_PYTHON", os.path.expanduser("~/.cache/lakectl-venv/bin/python"))
work = tempfile.mkdtemp(prefix="lakectl-audit-")

import duckdb  # noqa: E402

sys.path.insert(0, os.path.join(shared, "oracle"))
sys.path.insert(0, here)
from proctree import timed  # noqa: E402

seed = os.path.join(work, "seed.csv")
batch = os.path.join(work, "batch.csv")
gen = duckdb.connect()
rows_sql = """select range as id, ['eu', 'us', 'apac'][1 + range % 3] as region, (range % 10)::int as qty,
    now()::timestamp - to_seconds(range % 86400) as ts from range({lo}, {hi})"""
gen.execute(f"copy ({rows_sql.format(lo=0, hi=a.rows)}) to '{seed}' (header)")
gen.execute(f"copy ({rows_sql.format(lo=a.rows, hi=a.rows + a.batch)}) to '{batch}' (header)")

CHECKS = """  checks:
    - {name: ids-unique, unique: []}
    - {name: region-set, notNull: [region]}
    - {name: known-regions, acceptedValues: {region: [eu, us, apac]}}
    - {name: sane-growth, rowCount: {min: 1, maxChangePercent: 50}}
  publish: audited
"""
MANIFEST = """apiVersion: lakectl/v1
kind: Table
metadata: {{name: t, namespace: bench}}
spec:
  columns:
    - {{name: id, type: long, required: true}}
    - {{name: region, type: string}}
    - {{name: qty, type: int}}
    - {{name: ts, type: timestamp}}
  identifierFields: [id]
  sources:
    - {{name: seed, uri: {seed}}}
    - {{name: feed, uri: ../feed/*.csv}}
{checks}"""


def project(name, audited):
    root = os.path.join(work, name)
    os.makedirs(os.path.join(root, "manifests")); os.makedirs(os.path.join(root, "feed"))
    with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
        f.write(MANIFEST.format(seed=seed, checks=CHECKS if audited else ""))
    r = timed([lakectl, "apply", "manifests"], cwd=root)
    return root, r


def metadata(root):
    db = os.path.join(root, ".lakectl", "catalog.db")
    return sqlite3.connect(db).execute(
        "select metadata_location from iceberg_tables where table_name = 't'").fetchone()[0]


results = {}
for mode in ["direct", "audited"]:
    base, seeded = project(mode, mode == "audited")
    walls, last = [], None
    for i in range(a.runs):
        root = os.path.join(work, f"{mode}-{i}")
        shutil.copytree(base, root)
        shutil.copy(batch, os.path.join(root, "feed", "batch.csv"))
        r = timed([lakectl, "apply", "manifests"], cwd=root)
        walls.append(r[0]); last = (r, root)
    (wall, ratio, rss, _), root = last
    results[mode] = (seeded, statistics.median(walls), ratio, rss, root)
    print(f"{mode}: seed {seeded[0]:.1f} s, batch {statistics.median(walls):.2f} s", flush=True)

print(f"\napply of {a.rows:,} rows (seed) and then {a.batch:,} new rows, median of {a.runs}")
print(f"{'':<9} {'seed s':>7} {'batch s':>8} {'cpu/wall':>9} {'peak MiB':>9}")
for mode, (seeded, wall, ratio, rss, _) in results.items():
    print(f"{mode:<9} {seeded[0]:>7.1f} {wall:>8.2f} {ratio:>9.2f} {rss:>9.0f}")
d, au = results["direct"][1], results["audited"][1]
print(f"audited costs {au - d:+.2f} s over direct ({au / d:.2f}x) for staging, 4 checks and the publish")

# lakectl check vs DuckDB, the same queries on the same metadata file.
root = results["audited"][4]
meta = metadata(root)
DUCK = r"""
import sys, json
sys.path.insert(0, sys.argv[2])
from read import duck
con = duck()
t = f"iceberg_scan('{sys.argv[1]}')"
out = {
  "dup_keys": con.execute(f"select count(*) from (select id from {t} where id is not null group by id having count(*) > 1)").fetchone()[0],
  "null_region": con.execute(f"select count(*) from {t} where region is null").fetchone()[0],
  "bad_region": con.execute(f"select count(*) from {t} where region is not null and region not in ('eu', 'us', 'apac')").fetchone()[0],
  "rows": con.execute(f"select count(*) from {t}").fetchone()[0],
}
print(json.dumps(out))
"""
checks = {"lakectl": [], "duckdb": []}
last = {}
for i in range(a.runs):
    r = timed([lakectl, "check", "manifests", "--output", "json"], cwd=root)
    checks["lakectl"].append(r); last["lakectl"] = json.loads(r[3])
    r = timed([python, "-c", DUCK, meta, os.path.join(shared, "oracle")])
    checks["duckdb"].append(r); last["duckdb"] = json.loads(r[3].strip().splitlines()[-1])
print(f"\nthe 4 checks over {a.rows + a.batch:,} rows, median of {a.runs}")
print(f"{'':<9} {'wall s':>7} {'cpu/wall':>9} {'peak MiB':>9}")
for name, rs in checks.items():
    wall = statistics.median(r[0] for r in rs)
    print(f"{name:<9} {wall:>7.2f} {rs[-1][1]:>9.2f} {rs[-1][2]:>9.0f}")
res = {r["name"]: r for r in last["lakectl"]["tables"][0]["results"]}
duck_res = last["duckdb"]
assert res["ids-unique"]["failing"] == duck_res["dup_keys"], (res, duck_res)
assert res["region-set"]["failing"] == duck_res["null_region"], (res, duck_res)
assert res["known-regions"]["failing"] == duck_res["bad_region"], (res, duck_res)
assert all(r["passed"] for r in res.values()), res
print(f"same counts: {duck_res}")
lw = statistics.median(r[0] for r in checks["lakectl"])
dw = statistics.median(r[0] for r in checks["duckdb"])
print(f"lakectl check / DuckDB: {lw / dw:.2f}x")
shutil.rmtree(work)
