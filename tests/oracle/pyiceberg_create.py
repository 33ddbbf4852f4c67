#!/usr/bin/env python3
"""Makes a catalog, namespace and table with PyIceberg alone (the reverse check:
lakectl must plan and evolve a table another tool made, in a catalog file that tool
made). Appends three rows.

  pyiceberg_create.py CATALOG.db CATALOG_NAME WAREHOUSE_DIR
"""
import os, sys

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import FloatType, IntegerType, LongType, NestedField, StringType

db, name, warehouse = sys.argv[1:4]
os.makedirs(warehouse, exist_ok=True)
cat = SqlCatalog(name, uri=f"sqlite:///{os.path.abspath(db)}", warehouse=f"file://{os.path.abspath(warehouse)}")
cat.create_namespace("shop")
schema = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "qty", IntegerType(), required=False),
    NestedField(4, "price", FloatType(), required=False),
    identifier_field_ids=[1],
)
spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="region"))
t = cat.create_table("shop.items", schema=schema, partition_spec=spec)
t.append(pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "region": ["eu", "us", "eu"],
    "qty": pa.array([5, 7, 9], pa.int32()),
    "price": pa.array([1.5, 2.5, 3.5], pa.float32()),
}, schema=pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("region", pa.string()),
    pa.field("qty", pa.int32()),
    pa.field("price", pa.float32()),
])))
print(t.metadata_location)
