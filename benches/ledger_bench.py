#!/usr/bin/env python3
"""The ledger at scale (not a test): whole processes, medians, peak RSS.

  ledger_bench.py LAKECTL_BINARY [FILES=200000] [BATCH=20000]

A source of FILES small CSVs (two rows each), ingested in applies of BATCH files.
Reports after each apply metadata.json's size and the ledger files' total size; then
a no-op `plan` (median of 3), an apply of 1,000 new files, and a no-op plan again.
Targets (issue 13): metadata.json independent of the files ingested, a no-op plan
under 1 s, the apply of 1,000 new files under 3 s.
"""
import glob, json, os, statistics, subprocess, sys, tempfile, time

lakectl = os.path.abspath(sys.argv[1])
files = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 20_000
work = tempfile.mkdtemp(prefix="lakectl-ledger-")
data = os.path.join(work, "data")
os.makedirs(os.path.join(work, "manifests"))
with open(os.path.join(work, "manifests", "t.yaml"), "w") as f:
    f.write("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: bench\n"
            "spec:\n  columns:\n    - {name: id, type: long}\n    - {name: v, type: long}\n"
            "  sources:\n    - name: csv\n      uri: ../data/**/*.csv\n")


def write_files(first, n):
    for i in range(first, first + n):
        d = os.path.join(data, f"{i // 1000:04d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{i:07d}.csv"), "w") as f:
            f.write(f"id,v\n{2 * i},{i}\n{2 * i + 1},{i}\n")


def run(*args):
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", lakectl, *args], cwd=work,
                       capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode not in (0, 2):
        sys.exit(p.stdout + p.stderr)
    rss, user, system = p.stderr.strip().splitlines()[-1].split()
    return wall, (float(user) + float(system)) / wall, int(rss) / 1024, p.stdout


def sizes():
    md = max(glob.glob(os.path.join(work, ".lakectl/warehouse/bench/t/metadata/*.metadata.json")),
             key=os.path.getmtime)
    ledger = sum(os.path.getsize(f) for f in
                 glob.glob(os.path.join(work, ".lakectl/warehouse/bench/t/metadata/lakectl-ledger-*")))
    return os.path.getsize(md), ledger


print(f"{'ingested':>9} {'apply s':>8} {'cpu/wall':>9} {'peak MiB':>9} {'metadata.json':>14} {'ledger files':>13}")
done = 0
while done < files:
    n = min(batch, files - done)
    write_files(done, n)
    wall, ratio, rss, _ = run("apply", "manifests")
    done += n
    md, ledger = sizes()
    print(f"{done:>9,} {wall:>8.2f} {ratio:>9.2f} {rss:>9.0f} {md:>14,} {ledger:>13,}", flush=True)
plans = [run("plan", "manifests") for _ in range(3)]
assert all("No changes" in p[3] for p in plans), plans[0][3]
wall = statistics.median(p[0] for p in plans)
rss = max(p[2] for p in plans)
print(f"no-op plan over {done:,} ingested files: {wall:.2f} s (median of 3), peak {rss:.0f} MiB")
write_files(done, 1000)
wall, ratio, rss, out = run("apply", "manifests")
assert "2000 row(s)" in out, out
print(f"apply of 1,000 new files: {wall:.2f} s, cpu/wall {ratio:.2f}, peak {rss:.0f} MiB")
wall, _, _, out = run("plan", "manifests")
assert "No changes" in out, out
md, ledger = sizes()
print(f"then a no-op plan: {wall:.2f} s; metadata.json {md:,} B, ledger files {ledger:,} B")
