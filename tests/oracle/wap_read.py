#!/usr/bin/env python3
"""What PyIceberg and DuckDB read of a table's `main` and of each of its refs.

  wap_read.py CATALOG.db NS.TABLE

Prints {"main": {"snapshot_id", "ids", "duckdb_rows"}, "refs": {name: {"snapshot_id",
"type", "ids", "duckdb_rows"}}}: `ids` are the sorted `id` values PyIceberg scans
(`scan()` for main, `scan(snapshot_id=...)` for a ref), `duckdb_rows` DuckDB's count
from `iceberg_scan` of the catalog's current metadata file (at the ref's snapshot).
"""
import json, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "oracle"))
from read import duck  # noqa: E402
from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402

db, name = sys.argv[1], sys.argv[2]
t = SqlCatalog("lakectl", uri=f"sqlite:///{os.path.abspath(db)}").load_table(name)
con = duck()
meta = t.metadata_location


def ids(scan):
    return sorted(scan.to_arrow().column("id").to_pylist())


out = {
    "main": {
        "snapshot_id": t.metadata.current_snapshot_id,
        "ids": ids(t.scan()),
        "duckdb_rows": con.execute(f"select count(*) from iceberg_scan('{meta}')").fetchone()[0],
    },
    "refs": {},
}
for ref, r in t.metadata.refs.items():
    if ref == "main":
        continue
    out["refs"][ref] = {
        "snapshot_id": r.snapshot_id,
        "type": str(r.snapshot_ref_type),
        "ids": ids(t.scan(snapshot_id=r.snapshot_id)),
        "duckdb_rows": con.execute(
            f"select count(*) from iceberg_scan('{meta}', snapshot_from_id={r.snapshot_id})").fetchone()[0],
    }
print(json.dumps(out))
