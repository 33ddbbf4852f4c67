#!/usr/bin/env python3
"""Changes a table out of band with PyIceberg, as another writer would (the drift
tests): one operation per call, each its own PyIceberg commit.

  pyiceberg_alter.py CATALOG.db CATALOG_NAME TABLE OP [ARGS...]

  add-column NAME            a new optional string column
  set-property KEY VALUE
  append JSON_ROWS           rows as a JSON list of objects, in the table's schema
  expire-others              expire every snapshot but the current one
"""
import json, os, sys

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.types import StringType

db, name, table, op, *args = sys.argv[1:]
cat = SqlCatalog(name, uri=f"sqlite:///{os.path.abspath(db)}")
t = cat.load_table(table)
if op == "add-column":
    with t.update_schema() as u:
        u.add_column(args[0], StringType())
elif op == "set-property":
    with t.transaction() as tx:
        tx.set_properties({args[0]: args[1]})
elif op == "append":
    schema = t.schema().as_arrow()
    t.append(pa.Table.from_pylist(json.loads(args[0]), schema=schema))
elif op == "expire-others":
    current = t.current_snapshot().snapshot_id
    others = [s.snapshot_id for s in t.snapshots() if s.snapshot_id != current]
    t.maintenance.expire_snapshots().by_ids(others).commit()
else:
    sys.exit(f"unknown op {op}")
print(cat.load_table(table).metadata_location)
