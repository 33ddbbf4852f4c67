#!/usr/bin/env python3
"""The reference for benches/mutate.rs: a copy-on-write UPDATE with PyIceberg 0.12, as
the seed scripts do it: scan the matching rows, change them in pyarrow, and
`overwrite(df, overwrite_filter=…)` (PyIceberg's delete rewrites the files that only
partly match, then appends the changed rows). Run as a whole process, like lakectl.

  pyiceberg_update.py CATALOG.db DAY MAX_QTY

Prints JSON: rows changed, and the data files PyIceberg's new snapshots added/deleted.
"""
import json, sys

import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, LessThanOrEqual

db, day, max_qty = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cat = SqlCatalog("lakectl", uri=f"sqlite:///{db}")
t = cat.load_table("bench.sales")
before = {s.snapshot_id for s in t.snapshots()}
flt = And(
    And(GreaterThanOrEqual("ts", f"2024-01-{day:02}T00:00:00+00:00"),
        LessThan("ts", f"2024-01-{day + 1:02}T00:00:00+00:00")),
    LessThanOrEqual("qty", max_qty),
)
rows = t.scan(row_filter=flt).to_arrow()
i = rows.schema.get_field_index("qty")
field = rows.schema.field(i)
rows = rows.set_column(i, field, pc.add(rows["qty"], 100).cast(field.type))
t.overwrite(rows, overwrite_filter=flt)
t = cat.load_table("bench.sales")
new = [s for s in t.snapshots() if s.snapshot_id not in before]
get = lambda s, k: int(s.summary.additional_properties.get(k, s.summary.get(k) or 0) or 0) if s.summary else 0
print(json.dumps({
    "rows_changed": rows.num_rows,
    "snapshots": len(new),
    "deleted_data_files": sum(get(s, "deleted-data-files") for s in new),
    "added_data_files": sum(get(s, "added-data-files") for s in new),
}))
