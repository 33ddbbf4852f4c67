#!/usr/bin/env python3
"""The Spark engine against the local engine (not a test), whole processes, same run.

  spark_bench.py LAKECTL_BINARY [ROWS=10000000] [--runs N=1]

A CSV source of ROWS rows (id, ts, region, qty, v) in 8 files, made once. For each
engine, N fresh projects with one table `bench.t` (no properties: the engines' own file
sizes); apply #1 ingests the 8 files, then the table manifest gains a mutation that
updates 1% of the rows spread over every file (`id % 100 = 7`, `v = v + 1`, as in
spread_update.py) and apply #2 runs it. `local`: no Lakehouse manifest (the embedded
default, every core of this machine). `spark`: a Lakehouse manifest with
`engine: {type: spark}` on a standalone cluster started once for the whole benchmark
with pyspark's `spark-class` (a master and 2 workers of 1 core and 1g each, as in
tests/it/spark.rs; killed at exit); every apply is its own Spark application.

Measured from /proc every 20 ms (proctree.sampled): lakectl's process tree (with
spark-submit's driver JVM) and, separately, the executors (children of the workers, not
of lakectl); the worker JVMs' own CPU during the run is printed apart. cpu/wall is CPU
seconds over wall; peak RSS is the max over samples of the sum over the processes.
Medians of N. Both engines must end with the same count, sums and distinct counts
(`lakectl query`), or the script exits 1. Also prints rows and source MB per core-second
of each engine (CPU of every measured process), to project on paper.

Env: SPARK_PYTHON, SPARK_HOME and LAKECTL_SPARK_JARS, else from
../shared/spark/setup.sh ~/.cache/lakectl-spark.
"""
import argparse, atexit, ctypes, json, os, shutil, signal, socket, sqlite3, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("lakectl"); ap.add_argument("rows", nargs="?", type=int, default=10_000_000)
ap.add_argument("--runs", type=int, default=1)
a = ap.parse_args()
lakectl = os.path.abspath(a.lakectl)
here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")
sys.path.insert(0, here)
from proctree import sampled  # noqa: E402

env = dict(os.environ)
if not all(k in env for k in ("SPARK_PYTHON", "SPARK_HOME", "LAKECTL_SPARK_JARS")):
    out = subprocess.run(["bash", os.path.join(shared, "spark", "setup.sh"), os.path.expanduser("~/.cache/lakectl-spark")],
                         check=True, capture_output=True, text=True).stdout
    env.update(l.split("=", 1) for l in out.splitlines() if "=" in l)
env.update(PYSPARK_PYTHON=env["SPARK_PYTHON"], PYSPARK_DRIVER_PYTHON=env["SPARK_PYTHON"],
           SPARK_LOCAL_IP="127.0.0.1", NO_COLOR="1")
work = tempfile.mkdtemp(prefix="lakectl-spark-bench-")

# The source: 8 CSV files, written once.
src = os.path.join(work, "src")
os.makedirs(src)
REGIONS = ["eu", "us", "apac", "latam"]
per = -(-a.rows // 8)
for f in range(8):
    with open(os.path.join(src, f"part-{f}.csv"), "w") as out:
        out.write("id,ts,region,qty,v\n")
        for start in range(f * per, min(a.rows, (f + 1) * per), 100_000):
            out.write("".join(f"{i},2024-01-{1 + i % 28:02}T{i % 24:02}:{i % 60:02}:00Z,{REGIONS[i % 4]},{i % 7},{i % 1000}\n"
                              for i in range(start, min(a.rows, (f + 1) * per, start + 100_000))))
src_mb = sum(os.path.getsize(os.path.join(src, n)) for n in os.listdir(src)) / 1e6

TABLE = f"""apiVersion: lakectl/v1
kind: Table
metadata: {{name: t, namespace: bench}}
spec:
  columns:
    - {{name: id, type: long, required: true}}
    - {{name: ts, type: timestamptz}}
    - {{name: region, type: string}}
    - {{name: qty, type: int}}
    - {{name: v, type: long}}
  sources:
    - {{name: bulk, uri: {src}/*.csv}}
"""
MUTATION = f"""  mutations:
    - name: spread
      maxRowsChanged: {a.rows}
      update:
        where: id % 100 = 7
        set: {{v: v + 1}}
"""
QUERY = ("select count(*) as n, sum(id) as ids, sum(v) as s, sum(qty) as qty, count(distinct region) as regions, "
         "count(distinct ts) as stamps from bench.t")


# The cluster: started once, killed at exit (and with this process: PR_SET_PDEATHSIG).
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


cluster_dir = os.path.join(work, "cluster")
os.makedirs(cluster_dir)
daemons = []


def stop_cluster():
    for d in daemons:
        d.terminate()  # the worker's shutdown hook kills its executors
    for d in daemons:
        try:
            d.wait(timeout=20)
        except subprocess.TimeoutExpired:
            d.kill(); d.wait()
    daemons.clear()


atexit.register(stop_cluster)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def daemon(name, *args):
    e = dict(env, SPARK_WORKER_DIR=os.path.join(cluster_dir, "work"))
    d = subprocess.Popen([os.path.join(env["SPARK_HOME"], "bin", "spark-class"), *args], env=e, stdin=subprocess.DEVNULL,
                         stdout=open(os.path.join(cluster_dir, f"{name}.out"), "w"),
                         stderr=open(os.path.join(cluster_dir, f"{name}.log"), "w"), preexec_fn=die_with_parent)
    daemons.append(d)
    return d


t0 = time.time()
port = free_port()
master = f"spark://127.0.0.1:{port}"
daemon("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
       "--webui-port", str(free_port()))
workers = [daemon(f"worker{w}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                  "--memory", "1g", "--webui-port", str(free_port()), master).pid for w in range(2)]
while sum("Successfully registered with master" in open(os.path.join(cluster_dir, f"worker{w}.log")).read()
          for w in range(2)) < 2:
    if any(d.poll() is not None for d in daemons) or time.time() - t0 > 120:
        sys.exit(f"the Spark cluster did not come up in 120 s; logs in {cluster_dir}")
    time.sleep(0.3)
print(f"cluster {master} up in {time.time() - t0:.1f} s ({a.rows:,} rows, {src_mb:.0f} MB of CSV in 8 files)", flush=True)
jars = ", ".join(f'"{j}"' for j in env["LAKECTL_SPARK_JARS"].split(","))
LAKEHOUSE = f"""apiVersion: lakectl/v1
kind: Lakehouse
metadata: {{name: bench}}
spec:
  catalog: {{type: sql, uri: "sqlite:../.lakectl/catalog.db"}}
  warehouse: ../.lakectl/warehouse
  engine:
    type: spark
    master: {master}
    submit: "{os.path.join(env['SPARK_HOME'], 'bin', 'spark-submit')}"
    jars: [{jars}]
    conf: {{spark.executor.memory: 768m, spark.sql.shuffle.partitions: "4"}}
    minBytes: 0
"""


def data_files(root):
    loc = sqlite3.connect(os.path.join(root, ".lakectl", "catalog.db")).execute(
        "select metadata_location from iceberg_tables where table_name = 't'").fetchone()[0]
    meta = json.load(open(loc.removeprefix("file://")))
    cur = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    return int(cur["summary"].get("total-data-files", 0))


def apply(root, engine, what):
    watch = {"executors": (workers, False), "workers": (workers, True)} if engine == "spark" else {}
    out, err, wall, st = sampled([lakectl, "apply", "manifests"], watch=watch, env=env, cwd=root)
    if engine == "spark" and "spark: step" not in out + err:
        sys.exit(f"the {what} did not go to Spark:\n{out}\n{err}")
    ex = st.get("executors", (0.0, 0.0, None))
    if engine == "spark" and ex[2] is None:
        sys.exit(f"no executor was seen on the workers during the {what}:\n{out}\n{err}")
    daemons_cpu = st["workers"][0] - ex[0] if engine == "spark" else 0.0
    return dict(wall=wall, cpu=st["cmd"][0], rss=st["cmd"][1], ex_cpu=ex[0], ex_rss=ex[1], ex_up=ex[2],
                daemons_cpu=daemons_cpu, files=data_files(root))


results, answers = {}, {}
for engine in ("local", "spark"):
    for i in range(a.runs):
        root = os.path.join(work, f"{engine}-{i}")
        os.makedirs(os.path.join(root, "manifests"))
        if engine == "spark":
            with open(os.path.join(root, "manifests", "lakehouse.yaml"), "w") as f:
                f.write(LAKEHOUSE)
        with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
            f.write(TABLE)
        results.setdefault(("ingest", engine), []).append(apply(root, engine, "ingest"))
        with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
            f.write(TABLE + MUTATION)
        results.setdefault(("mutation", engine), []).append(apply(root, engine, "mutation"))
        q = subprocess.run([lakectl, "query", "--format", "json", QUERY], cwd=root, env=env, capture_output=True, text=True)
        if q.returncode != 0:
            sys.exit(f"query failed in {root}:\n{q.stdout}\n{q.stderr}")
        answers[f"{engine}-{i}"] = q.stdout.strip()
        r1, r2 = results[("ingest", engine)][-1], results[("mutation", engine)][-1]
        print(f"{engine} run {i + 1}: ingest {r1['wall']:.1f} s, mutation {r2['wall']:.1f} s", flush=True)

med = {k: {m: statistics.median(r[m] or 0 for r in rs) for m in rs[0]} for k, rs in results.items()}
print(f"\n{a.rows:,} rows: ingest of 8 CSV files ({src_mb:.0f} MB), then an update of 1% of the rows spread over "
      f"every file; median of {a.runs}; this machine: {os.cpu_count()} cores; cluster: 2 workers x 1 core, 1g\n")
print("| work | engine | wall s | cpu/wall | peak RSS MiB | data files |")
print("|---|---|---:|---:|---:|---:|")
for work_ in ("ingest", "mutation"):
    lo, sp = med[(work_, "local")], med[(work_, "spark")]
    print(f"| {work_} | local | {lo['wall']:.2f} | {lo['cpu'] / lo['wall']:.2f} | {lo['rss']:.0f} | {lo['files']:.0f} |")
    print(f"| {work_} | spark: lakectl + driver | {sp['wall']:.2f} | {sp['cpu'] / sp['wall']:.2f} | {sp['rss']:.0f} | {sp['files']:.0f} |")
    print(f"| {work_} | spark: executors | | {sp['ex_cpu'] / sp['wall']:.2f} | {sp['ex_rss']:.0f} | |")
print()
for work_ in ("ingest", "mutation"):
    lo, sp = med[(work_, "local")], med[(work_, "spark")]
    sp_cpu = sp["cpu"] + sp["ex_cpu"]
    print(f"{work_}: spark/local wall {sp['wall'] / lo['wall']:.2f}x, CPU {sp_cpu / lo['cpu']:.2f}x "
          f"({sp_cpu:.1f} vs {lo['cpu']:.1f} cpu-s), peak RSS {(sp['rss'] + sp['ex_rss']) / lo['rss']:.2f}x; "
          f"spark's first executor up after {sp['ex_up']:.1f} s; worker JVMs {sp['daemons_cpu']:.1f} cpu-s besides")
print("\nthroughput per core-second (CPU of every measured process; the mutation reads and rewrites the whole table):")
for work_ in ("ingest", "mutation"):
    for engine in ("local", "spark"):
        r = med[(work_, engine)]
        cpu = r["cpu"] + r["ex_cpu"]
        print(f"  {work_:<8} {engine:<5} {a.rows / cpu:>12,.0f} rows/core-s {src_mb / cpu:>8.2f} MB/core-s   "
              f"(wall: {a.rows / r['wall']:>12,.0f} rows/s {src_mb / r['wall']:>8.2f} MB/s)")
if len(set(answers.values())) != 1:
    print("\nTHE ENGINES DIFFER:\n" + "\n".join(f"  {k}: {v}" for k, v in answers.items()))
    sys.exit(1)
print(f"\nsame answer in every project: {next(iter(answers.values()))}")
stop_cluster()
shutil.rmtree(work)
