#!/usr/bin/env python3
"""Query benchmark (not a test): `lakectl query` against DuckDB's iceberg_scan on the
same Iceberg table; whole processes, same run.

  query_bench.py LAKECTL_BINARY [ROWS=10000000] [--runs N=3]

lakectl builds `bench.t` (id long, ts timestamptz, region string, qty int, price
decimal(12,2); partitioned by day(ts)) once, in the embedded default lakehouse with the
local engine, from 8 CSV files (one `lakectl apply`) of ROWS order lines over 16 days:
ids and times both increase through the files, so each data file (a day, a worker)
holds a narrow id range. Two queries, each run N times per engine (median):
  Q1 group-by   select region, count(*), sum(qty), sum(price) from bench.t group by region
  Q2 selective  count(*), sum(qty) where id between ROWS/2 and ROWS/2+1000 (files pruned
                by their id bounds)
Engines: lakectl (parallel scan), lakectl with LAKECTL_QUERY_PARALLEL=off (the
one-partition scan) and DuckDB (iceberg_scan of the table's current metadata file,
extension loaded offline, in its own python process). Each engine's numbers must be
DuckDB's (exit 1 otherwise). Prints wall, cpu/wall and peak RSS of the process tree,
and DuckDB's fixed cost (python start and extension loads, `select 1`) for reference.
The binary is copied first, so a rebuild during the run does not change it.

Env: LAKECTL_PYTHON (the reader env: DuckDB with its iceberg extension).
"""
import argparse, csv, io, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time
from decimal import Decimal

ap = argparse.ArgumentParser()
ap.add_argument("lakectl"); ap.add_argument("rows", nargs="?", type=int, default=10_000_000)
ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
oracle = os.path.join(here, "..", "..", "shared", "oracle")
python = os.environ.get("LAKECTL_PYTHON", os.path.expanduser("~/.cache/lakectl-venv/bin/python"))
work = tempfile.mkdtemp(prefix="lakectl-query-")
sys.path.insert(0, here)
from proctree import measured  # noqa: E402

FILES, DAYS = 8, 16


def stable_copy(src, dst):
    """Copies the binary once it exists, is not changing and runs (a rebuild may be on)."""
    for _ in range(120):
        try:
            st = os.stat(src); time.sleep(2)
            if os.stat(src).st_mtime != st.st_mtime or os.stat(src).st_size != st.st_size:
                continue
            shutil.copy2(src, dst)
            if os.path.getsize(dst) == st.st_size and subprocess.run(
                    [dst, "--version"], capture_output=True).returncode == 0:
                return dst
        except OSError:
            pass
        print(f"waiting for {src} (missing or being rebuilt)", flush=True)
        time.sleep(10)
    sys.exit(f"{src}: never became runnable")


lakectl = stable_copy(os.path.abspath(os.path.expanduser(a.lakectl)), os.path.join(work, "lakectl"))
root = os.path.join(work, "project")
data = os.path.join(root, "data")
os.makedirs(os.path.join(root, "manifests")); os.makedirs(data)

# The CSV files, in id order: order line `id` at 2024-03-01 + id * DAYS days / ROWS.
GEN = r"""
import sys, duckdb
rows, files, days, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
step = 86400 * days / rows
per = -(-rows // files)
for f in range(files):
    duckdb.sql(f'''copy (select range as id,
        strftime(timestamp '2024-03-01' + to_microseconds((range * {step} * 1e6)::bigint), '%Y-%m-%dT%H:%M:%S.%fZ') as ts,
        ['eu', 'us', 'apac', 'latam', 'mea'][1 + (range * 7919) % 5] as region,
        (1 + (range * 13) % 9)::int as qty,
        (((range * 37) % 100000) / 100)::decimal(12, 2) as price
      from range({f * per}, {min(rows, (f + 1) * per)})) to '{out}/part-{f:02}.csv' (header)''')
"""
subprocess.run([python, "-c", GEN, str(a.rows), str(FILES), str(DAYS), data], check=True)
with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
    f.write("""apiVersion: lakectl/v1
kind: Table
metadata: {name: t, namespace: bench}
spec:
  columns:
    - {name: id, type: long, required: true}
    - {name: ts, type: timestamptz, required: true}
    - {name: region, type: string}
    - {name: qty, type: int}
    - {name: price, type: "decimal(12, 2)"}
  partitioning:
    - {column: ts, transform: day}
  sources:
    - {name: orders, uri: ../data/*.csv}
""")


def run(cmd, env=None):
    """measured(cmd), retried while the binary is busy or missing (it is a copy: rarely)."""
    for _ in range(30):
        try:
            return measured(cmd, env=env, cwd=root)
        except SystemExit as e:
            if "cannot run" not in str(e):  # /usr/bin/time's words: Text file busy, missing
                raise
            print("lakectl busy or missing, retrying", flush=True); time.sleep(10)
    sys.exit(f"{cmd[:2]} never ran")


t = time.time()
run([lakectl, "apply", "manifests"])
print(f"apply of {a.rows:,} rows in {FILES} CSV files: {time.time() - t:.1f} s", flush=True)
meta = sqlite3.connect(os.path.join(root, ".lakectl", "catalog.db")).execute(
    "select metadata_location from iceberg_tables where table_name = 't'").fetchone()[0]
n = run([lakectl, "query", "--manifests", "manifests", "--format", "csv", "select count(*) from bench.t"])[0]
if int(n.strip().splitlines()[-1]) != a.rows:
    sys.exit(f"count(*) is {n.strip()}, not {a.rows}")

lo = a.rows // 2
hi = lo + 1000
# How many data files Q2's id range can touch, by the files' own id statistics.
STATS = r"""
import sys, duckdb
rs = duckdb.sql(f'''select file_name, min(stats_min_value::bigint), max(stats_max_value::bigint)
  from parquet_metadata('{sys.argv[1]}/**/*.parquet') where path_in_schema = 'id' group by file_name''').fetchall()
print(len(rs), sum(1 for _, mn, mx in rs if mn <= int(sys.argv[3]) and mx >= int(sys.argv[2])))
"""
files, touched = subprocess.run([python, "-c", STATS, os.path.join(root, ".lakectl", "warehouse"), str(lo), str(hi)],
                                check=True, capture_output=True, text=True).stdout.split()
print(f"{files} data files; the id range of Q2 overlaps {touched} of them", flush=True)

QUERIES = {
    "Q1 group-by": "select region, count(*), sum(qty), sum(price) from bench.t group by region",
    "Q2 id filter": f"select count(*), sum(qty) from bench.t where id between {lo} and {hi}",
}
DUCK = r"""
import sys, csv
sys.path.insert(0, sys.argv[2])
from read import duck
con = duck()
rows = con.execute(sys.argv[3].replace("bench.t", f"iceberg_scan('{sys.argv[1]}')")).fetchall()
w = csv.writer(sys.stdout); w.writerow(["header"]); w.writerows(rows)
"""
off = dict(os.environ, LAKECTL_QUERY_PARALLEL="off")
on = {k: v for k, v in os.environ.items() if k != "LAKECTL_QUERY_PARALLEL"}
ENGINES = {
    "lakectl": lambda sql: run([lakectl, "query", "--manifests", "manifests", "--format", "csv", sql], env=on),
    "lakectl (PARALLEL=off)": lambda sql: run([lakectl, "query", "--manifests", "manifests", "--format", "csv", sql], env=off),
    "DuckDB": lambda sql: measured([python, "-c", DUCK, meta, oracle, sql]),
}


def parsed(out):
    """The result rows (header dropped) as sorted tuples of numbers (text kept as is)."""
    def value(v):
        try:
            return Decimal(v)
        except ArithmeticError:
            return v
    rows = list(csv.reader(io.StringIO(out.strip())))[1:]
    return sorted(tuple(value(v) for v in r) for r in rows)


results = {(q, e): [] for q in QUERIES for e in ENGINES}
answers, startup = {}, []
for i in range(a.runs):
    for q, sql in QUERIES.items():
        for e, go in ENGINES.items():
            out, wall, cpu, rss = go(sql)
            results[q, e].append((wall, cpu / wall, rss))
            answers[q, e] = parsed(out)
    startup.append(measured([python, "-c", DUCK, meta, oracle, "select 1"])[1])
    print(f"run {i + 1}/{a.runs} done", flush=True)

bad = False
for q in QUERIES:
    duck = answers[q, "DuckDB"]
    wrong = [e for e in ENGINES if answers[q, e] != duck]
    for e in wrong:
        print(f"{q}: {e} gives {answers[q, e]}, DuckDB {duck}")
    bad |= bool(wrong)
    shown = ", ".join(" ".join(map(str, r)) for r in duck) if len(duck) < 3 else f"{len(duck)} rows"
    print(f"{q}: {shown}" + (" DIFFER" if wrong else ", the same from every engine"))

print(f"\n{a.rows:,} rows, {files} data files, median of {a.runs}; the process tree's wall, cpu/wall and peak RSS\n")
print("| query | engine | wall | cpu/wall | peak RSS | ratio to DuckDB (wall) |")
print("|---|---|---:|---:|---:|---:|")
for q in QUERIES:
    duck_wall = statistics.median(r[0] for r in results[q, "DuckDB"])
    for e in ENGINES:
        wall, ratio, rss = (statistics.median(r[k] for r in results[q, e]) for k in range(3))
        print(f"| {q} | {e} | {wall:.2f} s | {ratio:.2f} | {rss:.0f} MiB | {wall / duck_wall:.2f}x |")
print(f"\nDuckDB's fixed cost (python, extensions loaded, `select 1`): {statistics.median(startup):.2f} s")
shutil.rmtree(work)
sys.exit(1 if bad else 0)
