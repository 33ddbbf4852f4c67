#!/usr/bin/env python3
"""Copy-on-write update spread over every file (not a test), whole processes.

  spread_update.py LAKECTL_BINARY [ROWS=10000000] [BASELINE_BINARY]

A table of ROWS rows (id, v) in files of about 256 KiB (about 60 for 10M rows), and a declared mutation that
updates 1% of the rows in every file (`id % 100 = 7`). The same binary applies it on
two identical copies: with one runtime worker thread (TOKIO_WORKER_THREADS=1: every
file rewritten on one core, as before the engine seam) and with the default (one per
core). With BASELINE_BINARY (an older build, e.g. the one before the engine seam), it
applies the same mutation on a third copy with that binary, all cores. Reports wall,
cpu/wall, peak RSS and files written of each, and checks the tables end equal.
"""
import os, subprocess, sys, tempfile, time

lakectl = os.path.abspath(sys.argv[1])
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000
baseline = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else None
work = tempfile.mkdtemp(prefix="lakectl-spread-")
csv = os.path.join(work, "t.csv")
with open(csv, "w") as f:
    f.write("id,v\n")
    step = 1_000_000
    for start in range(0, rows, step):
        f.write("".join(f"{i},{i % 1000}\n" for i in range(start, min(rows, start + step))))


def manifest(root, mutation):
    os.makedirs(os.path.join(root, "manifests"), exist_ok=True)
    with open(os.path.join(root, "manifests", "t.yaml"), "w") as f:
        f.write("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: bench\n"
                "spec:\n  columns:\n    - {name: id, type: long}\n    - {name: v, type: long}\n"
                "  properties:\n    write.target-file-size-bytes: \"262144\"\n"
                f"  sources:\n    - name: csv\n      uri: {csv}\n" + mutation)


def timed(cmd, cwd, env):
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + cmd, cwd=cwd, env=env,
                       capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode != 0:
        sys.exit(p.stdout + p.stderr)
    rss, user, system = p.stderr.strip().splitlines()[-1].split()
    return wall, (float(user) + float(system)) / wall, int(rss) / 1024, p.stdout


mutation = ("  mutations:\n    - name: spread\n      update:\n        where: id % 100 = 7\n"
            "        set: {v: v + 1}\n")
results = {}
runs = [("one core", lakectl, "1"), ("all cores", lakectl, None)]
if baseline:
    runs.append(("baseline", baseline, None))
for name, binary, threads in runs:
    root = os.path.join(work, name.replace(" ", "-"))
    manifest(root, "")
    subprocess.run([binary, "apply", "manifests"], cwd=root, check=True, capture_output=True)
    manifest(root, mutation)
    env = dict(os.environ)
    if threads:
        env["TOKIO_WORKER_THREADS"] = threads
    wall, ratio, rss, out = timed([binary, "apply", "manifests"], root, env)
    line = next((l for l in out.splitlines() if "row(s) changed" in l), "")
    q = subprocess.run([binary, "query", "select count(*), sum(v) from bench.t", "--format", "csv"],
                       cwd=root, check=True, capture_output=True, text=True).stdout.strip()
    results[name] = (wall, ratio, rss, line.split(": ", 1)[-1], q)
print(f"copy-on-write update of 1% of {rows:,} rows in every file")
print(f"{'':<10} {'wall s':>8} {'cpu/wall':>9} {'peak MiB':>9}  what")
for name, (wall, ratio, rss, line, _) in results.items():
    print(f"{name:<10} {wall:>8.2f} {ratio:>9.2f} {rss:>9.0f}  {line}")
one, allc = results["one core"], results["all cores"]
for name, r in results.items():
    assert r[4] == allc[4], f"tables differ: {name} {r[4]} vs {allc[4]}"
print(f"all cores: {one[0] / allc[0]:.2f}x faster than one core", end="")
if baseline:
    print(f", {results['baseline'][0] / allc[0]:.2f}x faster than the baseline build", end="")
print(f"; the tables end with {allc[4].splitlines()[-1]}")
