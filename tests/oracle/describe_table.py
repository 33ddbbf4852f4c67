#!/usr/bin/env python3
"""Prints what PyIceberg sees of a table in a SQL catalog, as JSON.

  describe_table.py CATALOG.db CATALOG_NAME NS.TABLE

Fields are flattened by path (struct fields, list elements, map keys and values), with
PyIceberg's own type names. The integration tests compare this with what lakectl
declared: an independent reader must see the same ids, names, types, nullability,
docs, partition spec, sort order and properties.
"""
import json, os, sys

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.types import ListType, MapType, StructType


def walk(fields, prefix, out):
    for f in fields:
        path = prefix + f.name
        t = f.field_type
        if isinstance(t, StructType):
            kind = "struct"
        elif isinstance(t, ListType):
            kind = "list"
        elif isinstance(t, MapType):
            kind = "map"
        else:
            kind = str(t)
        out.append({"path": path, "id": f.field_id, "type": kind, "required": f.required, "doc": f.doc})
        if isinstance(t, StructType):
            walk(t.fields, path + ".", out)
        elif isinstance(t, ListType):
            walk([t.element_field], path + ".", out)
        elif isinstance(t, MapType):
            walk([t.key_field, t.value_field], path + ".", out)
    return out


def main():
    db, name, ident = sys.argv[1:4]
    props = {}
    if os.environ.get("LAKECTL_S3_ENDPOINT"):  # an S3 warehouse (tests/it/s3.rs)
        props = {"s3.endpoint": os.environ["LAKECTL_S3_ENDPOINT"], "s3.region": "us-east-1",
                 "s3.access-key-id": os.environ["LAKECTL_S3_KEY"],
                 "s3.secret-access-key": os.environ["LAKECTL_S3_SECRET"],
                 "s3.force-virtual-addressing": "false"}
    cat = SqlCatalog(name, uri=f"sqlite:///{os.path.abspath(db)}", **props)
    t = cat.load_table(ident)
    schema = t.schema()
    out = {
        "schema_id": schema.schema_id,
        "fields": walk(schema.fields, "", []),
        "identifier_field_ids": sorted(schema.identifier_field_ids),
        "spec_id": t.spec().spec_id,
        "spec": [{"source_id": f.source_id, "field_id": f.field_id, "transform": str(f.transform), "name": f.name}
                 for f in t.spec().fields],
        "sort": [{"source_id": f.source_id, "transform": str(f.transform), "direction": str(f.direction.value),
                  "null_order": str(f.null_order.value)} for f in t.sort_order().fields],
        "properties": dict(t.properties),
        "snapshots": [{"id": s.snapshot_id, "parent": s.parent_snapshot_id, "schema_id": s.schema_id,
                       "sequence_number": s.sequence_number,
                       "operation": s.summary.operation.value if s.summary else None,
                       "summary": {k: v for k, v in (s.summary.additional_properties if s.summary else {}).items()}}
                      for s in sorted(t.metadata.snapshots, key=lambda s: s.sequence_number)],
        "current_snapshot_id": t.metadata.current_snapshot_id,
        "rows": t.scan().to_arrow().num_rows,
    }
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
