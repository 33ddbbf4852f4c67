#!/usr/bin/env python3
"""Independent clients of lakectl's Iceberg REST catalog endpoint (`lakectl serve`):
PyIceberg's RestCatalog and DuckDB's iceberg extension (ATTACH). Prints one JSON object.

  rest_clients.py BASE_URL TOKEN

PyIceberg: lists namespaces and tables, reads shop.sales (written by lakectl), creates
py.events, appends twice, adds a column, renames it to py.events2, and a conflicting
commit is refused. DuckDB: attaches the endpoint and reads shop.sales and py.events2.
"""
import json, os, sys

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

base, token = sys.argv[1], sys.argv[2]
out = {}
cat = RestCatalog("lakectl", uri=f"{base}/catalog", token=token)
# Record the status of every table commit the client sends.
statuses = []
_post = cat._session.post
def _recording_post(url, *a, **k):
    r = _post(url, *a, **k)
    if "/tables/" in url:
        statuses.append(r.status_code)
    return r
cat._session.post = _recording_post
out["namespaces"] = sorted(".".join(n) for n in cat.list_namespaces())
out["tables"] = sorted(".".join(t) for t in cat.list_tables("shop"))
sales = cat.load_table("shop.sales").scan().to_arrow()
out["sales_rows"] = sales.num_rows
out["sales_qty"] = sum(v for v in sales["qty"].to_pylist() if v is not None)

cat.create_namespace("py")
t = cat.create_table("py.events", schema=Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "name", StringType(), required=False)))
t.append(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]}))
stale = cat.load_table("py.events")
t.append(pa.table({"id": pa.array([4], pa.int64()), "name": ["d"]}))
with t.update_schema() as u:
    u.add_column("extra", StringType())
# A writer on stale metadata: the catalog refuses its commit (409); PyIceberg then
# retries on fresh metadata, so nothing is lost and nothing overwritten.
before = len(statuses)
try:
    stale.append(pa.table({"id": pa.array([99], pa.int64()), "name": ["stale"]}))
    out["stale_append"] = "retried"
except CommitFailedException:
    out["stale_append"] = "refused"
out["stale_statuses"] = statuses[before:]
cat.rename_table("py.events", "py.events2")
cat.create_table("py.scratch", schema=Schema(NestedField(1, "x", LongType(), required=False)))
cat.drop_table("py.scratch")
out["py_tables"] = sorted(".".join(x) for x in cat.list_tables("py"))
events = cat.load_table("py.events2")
out["events_rows"] = events.scan().to_arrow().num_rows
out["events_fields"] = [f.name for f in events.schema().fields]

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "oracle"))
from read import duck  # noqa: E402

con = duck()
con.execute(f"CREATE SECRET lk (TYPE ICEBERG, TOKEN '{token}')")
con.execute(f"ATTACH 'lakectl' AS lk (TYPE ICEBERG, ENDPOINT '{base}/catalog', SECRET lk)")
out["duckdb_sales"] = con.execute("select count(*), sum(qty) from lk.shop.sales").fetchone()
out["duckdb_events"] = con.execute("select count(*) from lk.py.events2").fetchone()[0]
print(json.dumps(out))
