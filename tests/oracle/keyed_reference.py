#!/usr/bin/env python3
"""The final rows of a keyed source, computed in DuckDB SQL from the input files, and
compared with the table as PyIceberg and DuckDB (iceberg_scan) read it.

  keyed_reference.py --db CATALOG.db --table NS.T --mode upsert|replacePartitions|replace
      --seed 'glob' --batch 'f1,f2' [--batch 'f3' …] [--key id] [--op-column op]
      [--delete-when D]

Columns: id BIGINT, name VARCHAR, tier INTEGER, ts TIMESTAMP, balance DOUBLE; every
input file also has `_seq` (its line order; lakectl ignores it, not being a table
column) and, for CDC, the op column. A batch is the files of one apply, in order.
replacePartitions replaces the days (`day(ts)`) the batch holds. Prints JSON; exit 1
when a reader's rows differ from the reference.
"""
import argparse, glob, json, os, sqlite3, sys

import duckdb, duckdb_extension_avro, duckdb_extension_iceberg
from pyiceberg.catalog.sql import SqlCatalog

COLS = "id, name, tier, ts, balance"


def duck():
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions=false")
    for mod in (duckdb_extension_avro, duckdb_extension_iceberg):
        path = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", "*", "*.duckdb_extension"))[0]
        con.execute(f"LOAD '{path}'")
    return con


def read(con, files, op):
    # In the files' column order (read_csv's `columns` are positional).
    types = {"_seq": "BIGINT"}
    if op:
        types[op] = "VARCHAR"
    types.update({"id": "BIGINT", "name": "VARCHAR", "tier": "INTEGER", "ts": "TIMESTAMP",
                  "balance": "DOUBLE"})
    parts = []
    for n, f in enumerate(files):
        cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
        parts.append(f"select *, {n} as _file from read_csv('{f}', header=true, columns={cols})")
    return " union all ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db"); ap.add_argument("--table"); ap.add_argument("--mode")
    ap.add_argument("--seed"); ap.add_argument("--batch", action="append", default=[])
    ap.add_argument("--key", default="id"); ap.add_argument("--op-column")
    ap.add_argument("--delete-when", default="D")
    a = ap.parse_args()
    con = duck()
    seed = sorted(glob.glob(a.seed))
    con.execute(f"create table t as select {COLS} from ({read(con, seed, None)})")
    key = a.key
    for b in a.batch:
        files = b.split(",")
        con.execute(f"create or replace table b as {read(con, files, a.op_column)}")
        if a.mode == "upsert":
            con.execute(f"""create or replace table w as select * from b
                qualify row_number() over (partition by {key} order by _file desc, _seq desc) = 1""")
            keep_new = "true"
            if a.op_column:
                dels = ", ".join(f"'{d}'" for d in a.delete_when.split(","))
                keep_new = f"({a.op_column} is null or {a.op_column} not in ({dels}))"
            con.execute(f"""create or replace table t as
                select {COLS} from t where {key} not in (select {key} from w)
                union all select {COLS} from w where {keep_new}""")
        elif a.mode == "replacePartitions":
            con.execute(f"""create or replace table t as
                select {COLS} from t where cast(ts as date) not in (select distinct cast(ts as date) from b)
                union all select {COLS} from b""")
        elif a.mode == "replace":
            con.execute(f"create or replace table t as select {COLS} from b")
        else:
            raise SystemExit(f"unknown mode {a.mode}")

    def norm(rows):
        return sorted(tuple(str(v) for v in r) for r in rows)

    reference = norm(con.execute(f"select {COLS} from t").fetchall())
    name = sqlite3.connect(a.db).execute("select catalog_name from iceberg_tables limit 1").fetchone()[0]
    table = SqlCatalog(name, uri=f"sqlite:///{os.path.abspath(a.db)}").load_table(a.table)
    arrow = table.scan().to_arrow().select(["id", "name", "tier", "ts", "balance"])
    py_rows = norm(tuple(r.values()) for r in arrow.to_pylist())
    duck_rows = norm(con.execute(
        f"select {COLS} from iceberg_scan('{table.metadata_location}')").fetchall())
    out = {
        "reference_rows": len(reference),
        "pyiceberg_rows": len(py_rows),
        "duckdb_rows": len(duck_rows),
        "pyiceberg_equal": py_rows == reference,
        "duckdb_equal": duck_rows == reference,
        "distinct_keys": len({r[0] for r in py_rows}),
        "sum_id": sum(int(r[0]) for r in reference),
        "sum_tier": sum(int(r[2]) for r in reference if r[2] != "None"),
    }
    if not out["pyiceberg_equal"]:
        ref, got = set(reference), set(py_rows)
        out["missing"] = sorted(ref - got)[:5]
        out["unexpected"] = sorted(got - ref)[:5]
    print(json.dumps(out))
    return 0 if out["pyiceberg_equal"] and out["duckdb_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
