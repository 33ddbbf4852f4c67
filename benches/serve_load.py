#!/usr/bin/env python3
"""Load check for `lakectl serve` (not a test): N concurrent clients for a bounded time,
each looping over read-only queries and small uploads (each upload with its own
Idempotency-Key) on 127.0.0.1. Prints requests/s, latency percentiles per kind, and
errors (any non-2xx), then checks that every acknowledged upload's rows are in the table.

  serve_load.py BASE_URL TOKEN NS.TABLE [CLIENTS=8] [SECONDS=20] [UPLOAD_SHARE=0.2]

The table needs columns id (long), ts (timestamptz), region (string), qty (int).
"""
import json, random, sys, threading, time, uuid

import requests

base, token, table = sys.argv[1:4]
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 8
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 20
share = float(sys.argv[6]) if len(sys.argv) > 6 else 0.2
ns, name = table.rsplit(".", 1)
hdr = {"Authorization": f"Bearer {token}"}
lat = {"query": [], "upload": []}
errors = []
uploaded = [0]
lock = threading.Lock()
next_id = [10_000_000]
stop = time.time() + seconds


def worker(seed):
    rnd = random.Random(seed)
    s = requests.Session()
    while time.time() < stop:
        if rnd.random() < share:
            with lock:
                first = next_id[0]
                next_id[0] += 50
            body = "id,ts,region,qty\n" + "".join(
                f"{i},2024-03-0{1 + i % 3}T10:00:00Z,load,{i % 10}\n" for i in range(first, first + 50))
            t = time.perf_counter()
            r = s.post(f"{base}/api/v1/tables/{ns}/{name}/upload", data=body,
                       headers={**hdr, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "text/csv"})
            kind = "upload"
        else:
            t = time.perf_counter()
            r = s.get(f"{base}/api/v1/query", headers=hdr, params={
                "sql": f"select region, count(*) n, sum(qty) q from {table} group by region"})
            kind = "query"
        dt = time.perf_counter() - t
        with lock:
            lat[kind].append(dt)
            if r.status_code >= 300:
                errors.append((kind, r.status_code, r.text[:200]))
            elif kind == "upload":
                uploaded[0] += r.json()["rows"]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else 0.0


r = requests.get(f"{base}/api/v1/query", headers=hdr,
                 params={"sql": f"select count(*) n from {table} where region = 'load'"})
before = r.json()["rows"][0]["n"]
threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.time() - t0
r = requests.get(f"{base}/api/v1/query", headers=hdr,
                 params={"sql": f"select count(*) n, count(distinct id) d from {table} where region = 'load'"})
after = r.json()["rows"][0]
total = sum(len(v) for v in lat.values())
print(json.dumps({
    "clients": clients, "seconds": round(elapsed, 1), "requests": total,
    "requests_per_s": round(total / elapsed, 1),
    "query": {"n": len(lat["query"]), "p50_ms": round(pct(lat["query"], .5), 1), "p99_ms": round(pct(lat["query"], .99), 1)},
    "upload": {"n": len(lat["upload"]), "p50_ms": round(pct(lat["upload"], .5), 1), "p99_ms": round(pct(lat["upload"], .99), 1)},
    "errors": len(errors), "first_errors": errors[:3],
    "rows_acknowledged": uploaded[0], "rows_landed": after["n"] - before, "distinct_ids": after["d"],
}, indent=1))
sys.exit(1 if errors or after["n"] - before != uploaded[0] or after["d"] != after["n"] else 0)
