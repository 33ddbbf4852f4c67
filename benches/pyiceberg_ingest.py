#!/usr/bin/env python3
"""The reference for benches/ingest.rs: what the seed stack does with PyIceberg 0.12 +
pyarrow: read the CSV with pyarrow, append it to a SqlCatalog table partitioned by
day(ts). Run as a whole process so its time includes start-up, like lakectl's.

  pyiceberg_ingest.py CSV WORKDIR
"""
import os, sys

import pyarrow as pa
import pyarrow.csv as pcsv
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import DoubleType, IntegerType, LongType, NestedField, StringType, TimestamptzType

csv_path, work = sys.argv[1:3]
os.makedirs(f"{work}/warehouse", exist_ok=True)
cat = SqlCatalog("bench", uri=f"sqlite:///{work}/catalog.db", warehouse=f"file://{work}/warehouse")
cat.create_namespace("bench")
schema = Schema(
    NestedField(1, "id", LongType(), required=False),
    NestedField(2, "ts", TimestamptzType(), required=False),
    NestedField(3, "region", StringType(), required=False),
    NestedField(4, "product", StringType(), required=False),
    NestedField(5, "qty", IntegerType(), required=False),
    NestedField(6, "price", DoubleType(), required=False),
)
spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"))
table = cat.create_table("bench.sales", schema=schema, partition_spec=spec)
data = pcsv.read_csv(csv_path, convert_options=pcsv.ConvertOptions(column_types={
    "id": pa.int64(), "ts": pa.timestamp("us", tz="UTC"), "region": pa.string(),
    "product": pa.string(), "qty": pa.int32(), "price": pa.float64(),
}))
table.append(data)
print(table.current_snapshot().summary["total-records"])
