#!/usr/bin/env python3
"""Maintenance benchmark (not a test), whole processes, one run.

  maintain_bench.py LAKECTL_BINARY [APPLIES=1000] [SPARK_APPLIES=300]

1. The small-files table of issue 12: a table partitioned by day(ts), fed one 100-row
   CSV per `lakectl apply` (rows over 28 days, so 28 data files per apply), APPLIES
   times. Reported after the first apply, after the last, and after one apply with
   `spec.maintenance` (compaction + manifest merging) declared: data files, data
   manifests, metadata.json bytes, and `select count(*), sum(v)` wall time (median of
   5) with lakectl and with DuckDB's iceberg_scan.
2. Compaction against Spark 3.5 + Iceberg 1.10 `CALL system.rewrite_data_files`
   (local[2]) on two tables built the same way (SPARK_APPLIES applies each): wall,
   cpu/wall and peak RSS of each whole process (Spark's includes its JVM start).

Needs the reader env (LAKECTL_PYTHON or ~/.cache/lakectl-venv) and Spark
(`../shared/spark/setup.sh`, SPARK_PYTHON and LAKECTL_SPARK_JARS in the environment).
"""
import os, statistics, subprocess, sys, tempfile, time

lakectl = os.path.abspath(sys.argv[1])
applies = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
spark_applies = int(sys.argv[3]) if len(sys.argv) > 3 else 300
here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")
py = os.environ.get("LAKECTL_PYTHON", os.path.expanduser("~/.cache/lakectl-venv/bin/python"))
sys.path.insert(0, here)
from proctree import measured  # noqa: E402  (whole process trees, Spark's JVM too)


def run(cmd, env=None, cwd=None):
    """(stdout, wall s) of one whole process."""
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd)
    wall = time.time() - t
    out, err = p.stdout, p.stderr
    if p.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{out.decode()}\n{err.decode()}")
    return out.decode(), wall


def project(root, maintenance=""):
    os.makedirs(os.path.join(root, "manifests"), exist_ok=True)
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
        f.write("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: bench\n"
                "spec:\n  columns:\n    - {name: id, type: long}\n    - {name: ts, type: timestamptz}\n"
                "    - {name: v, type: long}\n  partitioning:\n    - {column: ts, transform: day}\n"
                "  sources:\n    - name: csv\n      uri: ../data/*.csv\n" + maintenance)


def feed(root, n, first=0):
    for i in range(first, first + n):
        rows = [f"{i * 100 + r},2024-02-{r % 28 + 1:02d}T12:00:00Z,{(i * 100 + r) % 1000}" for r in range(100)]
        with open(os.path.join(root, "data", f"f{i:05d}.csv"), "w") as f:
            f.write("id,ts,v\n" + "\n".join(rows) + "\n")
        run([lakectl, "apply", "manifests"], cwd=root)


def state(root):
    """data files, data manifests, metadata.json bytes (PyIceberg's view)."""
    code = ("import sys, os; from pyiceberg.catalog.sql import SqlCatalog\n"
            "c = SqlCatalog('lakectl', uri='sqlite:///' + os.path.abspath(sys.argv[1]))\n"
            "t = c.load_table('bench.t')\n"
            "m = [x for x in t.inspect.manifests().to_pylist() if x['content'] == 0]\n"
            "print(len(t.inspect.files().to_pylist()), len(m), os.path.getsize(t.metadata_location.replace('file://', '')), t.metadata_location)\n")
    out, _ = run([py, "-c", code, os.path.join(root, ".lakectl", "catalog.db")])
    files, manifests, size, location = out.split()
    return int(files), int(manifests), int(size), location


def query_times(root, location):
    sql = "select count(*), sum(v) from bench.t"
    lk = statistics.median(run([lakectl, "query", sql, "--format", "csv"], cwd=root)[1] for _ in range(5))
    duck = ("import sys, glob, os, duckdb, duckdb_extension_avro, duckdb_extension_iceberg\n"
            "con = duckdb.connect(); con.execute('SET autoinstall_known_extensions=false')\n"
            "for m in (duckdb_extension_avro, duckdb_extension_iceberg):\n"
            "    con.execute(\"LOAD '%s'\" % glob.glob(os.path.join(os.path.dirname(m.__file__), 'extensions', '*', '*.duckdb_extension'))[0])\n"
            "print(con.execute(\"select count(*), sum(v) from iceberg_scan('%s')\" % sys.argv[1]).fetchall())\n")
    dk = statistics.median(run([py, "-c", duck, location.replace("file://", "")])[1] for _ in range(5))
    return lk, dk


def row(label, root):
    files, manifests, size, location = state(root)
    lk, dk = query_times(root, location)
    print(f"{label:<28} {files:>8} {manifests:>10} {size:>14,} {lk:>10.2f} {dk:>10.2f}")


print(f"lakectl maintenance benchmark: {applies} one-file applies (100 rows, 28 day partitions each)")
work = tempfile.mkdtemp(prefix="lakectl-maint-bench-")
a = os.path.join(work, "a")
project(a)
print(f"{'state':<28} {'files':>8} {'manifests':>10} {'metadata B':>14} {'lakectl s':>10} {'duckdb s':>10}")
feed(a, 1)
row("after 1 apply", a)
t = time.time()
feed(a, applies - 1, first=1)
feed_s = time.time() - t
row(f"after {applies} applies", a)
project(a, "  maintenance:\n    compaction: {minInputFiles: 2}\n    manifests: {minCountToMerge: 2}\n")
_, wall, cpu, rss = measured([lakectl, "apply", "manifests"], cwd=a)
row("after maintenance", a)
# The compaction's manifests still list the files it removed (DELETED entries, as the
# spec keeps them for that snapshot); the next apply merges them away.
run([lakectl, "apply", "manifests"], cwd=a)
row("after a second apply", a)
print(f"(feeding took {feed_s:.0f} s, {feed_s / max(applies - 1, 1) * 1000:.0f} ms per apply; "
      f"the maintenance apply: {wall:.2f} s wall, cpu/wall {cpu / wall:.2f}, peak RSS {rss:.0f} MiB)")

print(f"\ncompaction of {spark_applies * 28} small files ({spark_applies * 100} rows): lakectl vs Spark rewrite_data_files (local[2])")
b, c = os.path.join(work, "b"), os.path.join(work, "c")
for root in (b, c):
    project(root)
    feed(root, spark_applies)
project(b, "  maintenance:\n    compaction: {minInputFiles: 2}\n")
_, lw, lc, lr = measured([lakectl, "maintain", "--manifests", "manifests"], cwd=b)
spark_env = dict(os.environ)
sql = os.path.join(shared, "spark", "sql.py")
_, sw, sc, sr = measured([os.environ["SPARK_PYTHON"], sql, "--jdbc", os.path.join(c, ".lakectl", "catalog.db"),
                          "--warehouse", os.path.join(c, ".lakectl", "warehouse"),
                          "CALL lk.system.rewrite_data_files(table => 'bench.t', options => map('min-input-files', '2'))"],
                         env=spark_env)
fb, _, _, _ = state(b)
fc, _, _, _ = state(c)
print(f"{'':<10} {'wall s':>8} {'cpu/wall':>9} {'peak MiB':>9} {'files after':>12}")
print(f"{'lakectl':<10} {lw:>8.2f} {lc / lw:>9.2f} {lr:>9.0f} {fb:>12}")
print(f"{'spark':<10} {sw:>8.2f} {sc / sw:>9.2f} {sr:>9.0f} {fc:>12}")
print(f"lakectl is {sw / lw:.1f}x faster, {lr / sr:.2f}x Spark's peak RSS")
