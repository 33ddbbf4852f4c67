#!/usr/bin/env python3
"""Soak of `lakectl watch` (not a test): many tables, random manifest edits and source
files arriving for a bounded time; reports reconcile latency p50/p99, the watcher's CPU
time and RSS, and checks the final state equals one clean `lakectl apply` of the same
manifests and files.

  watch_soak.py LAKECTL_BINARY [TABLES=200] [SECONDS=120] [EVENTS_PER_SECOND=4] [WATCH_ARGS…]

WATCH_ARGS go to `lakectl watch` (e.g. `--poll` to compare polling with file events).

Latency of an event (a new CSV under a table's source directory, or a manifest edit
adding a column) is the time from the write until the watcher's /status shows the
table Ready with a newer applied snapshot than before the write. The watcher runs with
a 30 s resync, so what is measured is the file-event path (an OS file event let
settle 100 ms, at most 500 ms; or with `--poll` the 250 ms poll and a 250 ms wait) plus
the reconcile itself.
"""
import json, os, random, shutil, signal, subprocess, sys, tempfile, threading, time
import urllib.request

binary = os.path.abspath(sys.argv[1])
tables = int(sys.argv[2]) if len(sys.argv) > 2 else 200
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 120
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 4.0
watch_args = sys.argv[5:]
rng = random.Random(7)

root = tempfile.mkdtemp(prefix="lakectl-soak-")
man = os.path.join(root, "manifests")
os.makedirs(man)


def manifest(i, extra_cols):
    cols = "".join(f"    - name: c{k}\n      type: string\n" for k in range(extra_cols))
    return (f"apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t{i:03d}\n  namespace: soak\n"
            f"spec:\n  columns:\n    - name: id\n      type: long\n      required: true\n"
            f"    - name: v\n      type: int\n{cols}"
            f"  sources:\n    - name: files\n      uri: ../data/t{i:03d}/\n      format: csv\n")


extra = [0] * tables
files = [0] * tables
next_id = [0]


def write_csv(i):
    d = os.path.join(root, "data", f"t{i:03d}")
    os.makedirs(d, exist_ok=True)
    rows = []
    for _ in range(20):
        next_id[0] += 1
        rows.append(f"{next_id[0]},{next_id[0] % 97}")
    tmp = os.path.join(d, f".f{files[i]:04d}.tmp")
    with open(tmp, "w") as f:
        f.write("id,v\n" + "\n".join(rows) + "\n")
    os.rename(tmp, os.path.join(d, f"f{files[i]:04d}.csv"))
    files[i] += 1


for i in range(tables):
    with open(os.path.join(man, f"t{i:03d}.yaml"), "w") as f:
        f.write(manifest(i, 0))
    write_csv(i)

t0 = time.time()
out = subprocess.run([binary, "apply", "manifests"], cwd=root, capture_output=True, text=True)
assert out.returncode == 0, out.stdout + out.stderr
print(f"initial apply of {tables} tables: {time.time() - t0:.1f} s")

w = subprocess.Popen([binary, "watch", "manifests", "--interval", "30s", "--addr", "127.0.0.1:0",
                      *watch_args],
                     cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = w.stdout.readline().strip().replace("listening on ", "")
clk = os.sysconf("SC_CLK_TCK")


def proc_stat():
    with open(f"/proc/{w.pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / clk
    rss = hwm = 0
    with open(f"/proc/{w.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, rss, hwm


def status():
    with urllib.request.urlopen(base + "/status", timeout=10) as r:
        return json.load(r)


def snapshot_of(s, name):
    t = s["tables"].get(name) or {}
    return t.get("last_applied_snapshot"), t.get("condition")


# Wait for the first cycle (every table Ready).
while True:
    s = status()
    if len(s["tables"]) == tables and all(t["condition"] == "Ready" for t in s["tables"].values()):
        break
    time.sleep(0.5)
cpu0, _, _ = proc_stat()
print(f"watcher up; first cycle done ({s['cycles']} cycle(s))")

pending = {}  # table -> (write time, snapshot before)
latencies = []
lock = threading.Lock()
rss_samples = []
stop = threading.Event()


def poller():
    while not stop.is_set():
        try:
            s = status()
        except Exception:
            time.sleep(0.1)
            continue
        now = time.time()
        with lock:
            for name, (at, before) in list(pending.items()):
                snap, cond = snapshot_of(s, name)
                if cond == "Ready" and snap is not None and snap != before:
                    latencies.append(now - at)
                    del pending[name]
        rss_samples.append(proc_stat()[1])
        time.sleep(0.1)


th = threading.Thread(target=poller)
th.start()
events = {"file": 0, "edit": 0}
end = time.time() + seconds
while time.time() < end:
    i = rng.randrange(tables)
    name = f"soak.t{i:03d}"
    with lock:
        if name in pending:
            continue  # one outstanding event per table keeps latencies unambiguous
        before, _ = snapshot_of(status(), name)
        pending[name] = (time.time(), before)
    if rng.random() < 0.7:
        write_csv(i)
        events["file"] += 1
    else:
        extra[i] += 1
        with open(os.path.join(man, f"t{i:03d}.yaml"), "w") as f:
            f.write(manifest(i, extra[i]))
        events["edit"] += 1
    time.sleep(rng.expovariate(rate))

# Let the outstanding events land.
deadline = time.time() + 120
while time.time() < deadline:
    with lock:
        if not pending:
            break
    time.sleep(0.2)
stop.set()
th.join()
cpu1, rss, hwm = proc_stat()
s = status()
with urllib.request.urlopen(base + "/metrics") as r:
    metrics = r.read().decode()
w.send_signal(signal.SIGTERM)
w.wait(timeout=60)

lat = sorted(latencies)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"tables {tables}, {seconds:.0f} s, events: {events['file']} files, {events['edit']} manifest edits; "
      f"{len(pending)} not landed")
print(f"reconcile latency (event → Ready with a new snapshot): n={len(lat)} p50 {pct(0.5):.2f} s, "
      f"p99 {pct(0.99):.2f} s, max {lat[-1] if lat else float('nan'):.2f} s")
print(f"watcher CPU {cpu1 - cpu0:.1f} s over {seconds:.0f} s ({(cpu1 - cpu0) / seconds * 100:.0f}% of one core); "
      f"RSS now {rss:.0f} MiB, mean {sum(rss_samples) / max(1, len(rss_samples)):.0f} MiB, peak {hwm:.0f} MiB; "
      f"cycles {s['cycles']}")
for line in metrics.splitlines():
    if line.startswith(("lakectl_reconciles_total", "lakectl_reconcile_errors_total",
                        "lakectl_applied_changes_total", "lakectl_reconcile_seconds_total")):
        print("  " + line)

# The final state equals one clean apply of the same manifests and files.
clean = tempfile.mkdtemp(prefix="lakectl-soak-clean-")
shutil.copytree(man, os.path.join(clean, "manifests"))
shutil.copytree(os.path.join(root, "data"), os.path.join(clean, "data"))
t0 = time.time()
out = subprocess.run([binary, "apply", "manifests"], cwd=clean, capture_output=True, text=True)
assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
print(f"clean apply of the final manifests and {sum(files)} files: {time.time() - t0:.1f} s")


def state(d):
    plan = subprocess.run([binary, "plan", "manifests"], cwd=d, capture_output=True, text=True)
    sql = " union all ".join(
        f"select 't{i:03d}' as t, count(*) as n, sum(id) as s, sum(v) as sv from soak.t{i:03d}"
        for i in range(tables))
    q = subprocess.run([binary, "query", sql, "--format", "json"], cwd=d, capture_output=True, text=True)
    assert q.returncode == 0, q.stderr[-2000:]
    return plan.returncode, sorted(json.loads(q.stdout), key=lambda r: r["t"])


(pw, sw), (pc, sc) = state(root), state(clean)
print(f"plan after the soak: exit {pw}; after the clean apply: exit {pc}")
print("final state equals a clean apply:", sw == sc, f"({sum(r['n'] for r in sw)} rows in {len(sw)} tables)")
sys.exit(0 if sw == sc and pw == 0 and pc == 0 and not pending else 1)
