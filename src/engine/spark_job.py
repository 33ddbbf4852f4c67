"""lakectl's Spark job (shipped inside the lakectl binary, written out and submitted by
`lakectl apply` with `spec.engine.type: spark`).

  spark-submit … spark_job.py JOB.json

The job does a change's data work on a scratch branch of the table and never touches
`main`: it creates branch `job.branch` at snapshot `job.base`, runs each step against
that branch (each step that writes is one Iceberg commit on the branch), and exits.
lakectl then reads the branch's snapshots (the data files Spark added and removed) and
commits them to `main` through its own commit path, with its ledger and annotation, and
drops the branch in that commit.

Protocol on stdout, one line each: `LAKECTL-PROGRESS <text>`, `LAKECTL-RESULT <json>`
(after every step: per step what it counted), `LAKECTL-ERROR <message>` (then exit 1).
"""
import json
import sys
import threading
import time
import traceback


def emit(kind, payload):
    sys.stdout.write(f"LAKECTL-{kind} {payload}\n")
    sys.stdout.flush()


def fail(message):
    emit("ERROR", message.replace("\n", " | "))
    sys.exit(1)


def java_message(e):
    """The driver's own message: the root cause's first line, not py4j's wrapper or a
    stack trace."""
    j = getattr(e, "java_exception", None)
    if j is None:
        text = str(e).strip()
        return text.splitlines()[0] if text else type(e).__name__
    while j.getCause() is not None and j.getCause() != j:
        j = j.getCause()
    lines = (j.getMessage() or "").strip().splitlines()
    return f"{j.getClass().getSimpleName()}: {lines[0] if lines else ''}"


# What the job is doing, for the error message.
CONTEXT = ["starting Spark"]


def progress_thread(sc, stop):
    """Polls Spark's status tracker: one line per change of the active stages."""
    tracker = sc.statusTracker()
    last = None
    while not stop.wait(1.0):
        try:
            parts = []
            for sid in sorted(tracker.getActiveStageIds()):
                st = tracker.getStageInfo(sid)
                if st is not None:
                    parts.append(f"stage {sid}: {st.numCompletedTasks}/{st.numTasks} task(s)")
            line = ", ".join(parts)
            if line and line != last:
                emit("PROGRESS", line)
                last = line
        except Exception:  # the tracker is best effort
            pass


def quote(part):
    return "`" + part.replace("`", "``") + "`"


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    from pyspark.sql import SparkSession, functions as F, types as T

    cat = job["catalog"]["name"]
    b = SparkSession.builder.appName(job["app"])
    b = b.config("spark.sql.extensions",
                 "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
    b = b.config(f"spark.sql.catalog.{cat}", "org.apache.iceberg.spark.SparkCatalog")
    for k, v in job["catalog"]["props"].items():
        b = b.config(f"spark.sql.catalog.{cat}.{k}", v)
    # Exact semantics: a bad value fails the job (ANSI casts), names match as written.
    b = b.config("spark.sql.ansi.enabled", "true")
    b = b.config("spark.sql.caseSensitive", "true")
    # Required columns are checked row by row below (a null fails the job).
    b = b.config("spark.sql.iceberg.check-nullability", "false")
    b = b.config("spark.sql.session.timeZone", "UTC")
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    stop = threading.Event()
    threading.Thread(target=progress_thread, args=(spark.sparkContext, stop), daemon=True).start()

    ns = ".".join(quote(p) for p in job["namespace"])
    table = f"{quote(cat)}.{ns}.{quote(job['table'])}"
    branch = job["branch"]
    on_branch = f"{table}.{quote('branch_' + branch)}"
    CONTEXT[0] = f"branch {branch} at snapshot {job['base']}"
    emit("PROGRESS", CONTEXT[0])
    spark.sql(f"ALTER TABLE {table} CREATE BRANCH {quote(branch)} AS OF VERSION {int(job['base'])}")
    target = spark.table(on_branch).schema
    results = []
    for i, step in enumerate(job["steps"]):
        kind = step["kind"]
        CONTEXT[0] = describe(step)
        emit("PROGRESS", f"step {i + 1}/{len(job['steps'])}: {CONTEXT[0]}")
        t0 = time.time()
        if kind == "ingest":
            results.append(ingest(spark, F, T, step, target, on_branch))
        elif kind == "keyed":
            results.append(keyed(spark, F, T, step, target, on_branch))
        elif kind == "sql":
            results.append(run_sql(spark, step, on_branch))
        elif kind == "compact":
            results.append(compact(spark, step, on_branch))
        else:
            fail(f"unknown step kind {kind}")
        emit("PROGRESS", f"step {i + 1} done in {time.time() - t0:.1f} s")
    stop.set()
    emit("RESULT", json.dumps({"branch": branch, "steps": results}))
    spark.stop()


def describe(step):
    kind = step["kind"]
    if kind == "ingest":
        files = step["files"]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return f"ingest of {len(files)} file(s) ({shown})"
    if kind == "keyed":
        return f"{step['mode']} of {len(step['files'])} file(s)"
    if kind == "sql":
        return step["sql"].replace("{table}", "the table")
    return f"compaction of {len(step['files'])} file(s)"


def read_source(spark, F, T, step, target):
    fmt = step["format"]
    files = step["files"]
    if fmt == "csv":
        c = step["csv"]
        r = (spark.read.option("header", "true" if c["header"] else "false")
             .option("sep", c["delimiter"]).option("quote", c["quote"])
             .option("escape", c["quote"]).option("nullValue", c["nullString"])
             .option("encoding", c.get("encoding") or "UTF-8")
             .option("mode", "FAILFAST").option("multiLine", "true")
             .option("inferSchema", "false"))
        df = r.csv(files)
        # A UTF-8 byte order mark belongs to the file, not to the first column's name.
        if df.columns and df.columns[0].startswith("\ufeff"):
            df = df.withColumnRenamed(df.columns[0], df.columns[0][1:])
        return df, True
    if fmt == "json":
        # Read by name with the table's types (no inference pass; nested fields by
        # name too); a value of another type fails the job.
        to_source = {t: s for s, t in (step.get("columns") or {}).items()}
        fields = [T.StructField(to_source.get(f.name, f.name), f.dataType, True)
                  for f in target.fields]
        cdc = step.get("cdc")
        if cdc and all(f.name != cdc["opColumn"] for f in fields):
            fields.append(T.StructField(cdc["opColumn"], T.StringType(), True))
        return spark.read.schema(T.StructType(fields)).option("mode", "FAILFAST").json(files), False
    if fmt == "parquet":
        return spark.read.parquet(*files), False
    fail(f"format {fmt} is not supported by the spark engine")


def convert(F, T, e, src, dst):
    """`e` (of Spark type `src`) as `dst`: struct fields by name (a cast would pair
    them by position), lists and maps element by element, primitives cast."""
    if isinstance(dst, T.StructType):
        if not isinstance(src, T.StructType):
            fail(f"a {src.simpleString()} cannot become {dst.simpleString()}")
        have = {f.name: f for f in src.fields}
        parts = []
        for f in dst.fields:
            s = have.get(f.name)
            v = convert(F, T, e.getField(f.name), s.dataType, f.dataType) if s else F.lit(None).cast(f.dataType)
            parts.append(v.alias(f.name))
        return F.when(e.isNull(), F.lit(None).cast(dst)).otherwise(F.struct(*parts))
    if isinstance(dst, T.ArrayType):
        if not isinstance(src, T.ArrayType):
            fail(f"a {src.simpleString()} cannot become {dst.simpleString()}")
        return F.transform(e, lambda x: convert(F, T, x, src.elementType, dst.elementType))
    if isinstance(dst, T.MapType):
        if not isinstance(src, T.MapType):
            fail(f"a {src.simpleString()} cannot become {dst.simpleString()}")
        m = F.transform_values(e, lambda k, v: convert(F, T, v, src.valueType, dst.valueType))
        return F.transform_keys(m, lambda k, v: convert(F, T, k, src.keyType, dst.keyType))
    return e if src == dst else e.cast(dst)


def table_columns(F, T, df, text, step, target):
    """The source rows as the table's columns, by name (`columns:` renames,
    `defaults:` fill in), cast exactly: a value that does not fit fails the job."""
    rename = step.get("columns") or {}  # source column -> table column
    insensitive = step.get("caseInsensitive")
    by_table = {}
    for src in df.columns:
        name = rename.get(src, src)
        by_table[name.lower() if insensitive else name] = src
    if not step.get("header", True) and text:
        # No header: the columns are the table's, in order.
        by_table = {f.name: src for f, src in zip(target.fields, df.columns)}
    defaults = step.get("defaults") or {}
    cols = []
    for f in target.fields:
        src = by_table.get(f.name.lower() if insensitive else f.name)
        if src is None:
            v = defaults.get(f.name)
            e = F.lit(v).cast(f.dataType) if v is not None else F.lit(None).cast(f.dataType)
        else:
            e = F.col(quote(src))
            complex_type = isinstance(f.dataType, (T.StructType, T.ArrayType, T.MapType))
            if text and complex_type:
                # JSON text in a CSV field, parsed by name.
                e = F.from_json(e, f.dataType, {"mode": "FAILFAST"})
            elif not (text and isinstance(f.dataType, T.StringType)):
                e = convert(F, T, e, df.schema[src].dataType, f.dataType)
            if f.name in defaults:
                e = F.coalesce(e, F.lit(defaults[f.name]).cast(f.dataType))
        if not f.nullable:
            e = F.coalesce(e, F.raise_error(F.lit(
                f"required column {f.name} is null in a row of {', '.join(step['files'][:3])}")).cast(f.dataType))
        cols.append(e.alias(f.name))
    return cols


def rows_by_file(F, df):
    """Rows per source file, for lakectl's ledger (a second, column-free read)."""
    from urllib.parse import unquote, urlparse
    counts = {}
    for r in df.groupBy(F.input_file_name()).count().collect():
        u = urlparse(r[0])
        counts[unquote(u.path) if u.scheme == "file" else r[0]] = r[1]
    return counts


def ingest(spark, F, T, step, target, on_branch):
    df, text = read_source(spark, F, T, step, target)
    out = df.select(*table_columns(F, T, df, text, step, target))
    out.writeTo(on_branch).append()
    return {"rows_by_file": rows_by_file(F, df)}


def keyed(spark, F, T, step, target, on_branch):
    """An upsert (MERGE, copy-on-write), or a replacement of the partitions the batch
    touches or of the whole table."""
    from pyspark.sql import Window
    df, text = read_source(spark, F, T, step, target)
    cols = table_columns(F, T, df, text, step, target)
    mode = step["mode"]
    counts = rows_by_file(F, df)
    if mode == "replacePartitions":
        df.select(*cols).writeTo(on_branch).overwritePartitions()
        return {"rows_by_file": counts}
    if mode == "replace":
        df.select(*cols).writeTo(on_branch).overwrite(F.lit(True))
        return {"rows_by_file": counts}
    key = step["key"]
    files = {name: i for i, name in enumerate(step["files"])}
    idx = F.create_map(*[x for name, i in files.items() for x in (F.lit(name), F.lit(i))])
    path = F.url_decode(F.regexp_replace(F.input_file_name(), "^file:(//)?", ""))
    extra = [F.coalesce(idx[path], F.raise_error(F.concat(
        F.lit("lakectl could not place source file "), F.input_file_name()))).alias("_lk_file")]
    if step["format"] == "parquet":
        extra.append(F.col("_metadata.row_index").alias("_lk_row"))
    else:
        # One task per file (multiLine CSV): the id grows with the row's place.
        extra.append(F.monotonically_increasing_id().alias("_lk_row"))
    cdc = step.get("cdc")
    if cdc:
        extra.append(F.col(quote(cdc["opColumn"])).cast("string").alias("_lk_op"))
    batch = df.select(*cols, *extra)
    for k in key:
        batch = batch.withColumn(k, F.coalesce(F.col(quote(k)), F.raise_error(
            F.lit(f"key column {k} is null in a row of the batch")).cast(batch.schema[k].dataType)))
    # Materialised once: the rows' places (non-deterministic ids) are fixed before
    # the batch is resolved by key and merged.
    batch = batch.localCheckpoint(eager=True)
    rows = batch.count()
    keys = batch.select(*[quote(k) for k in key]).distinct().count()
    if step["onDuplicateKey"] == "error" and keys != rows:
        fail(f"the batch has {rows - keys} row(s) whose key another row of it has (onDuplicateKey: error)")
    w = Window.partitionBy(*[quote(k) for k in key]).orderBy(F.desc("_lk_file"), F.desc("_lk_row"))
    last = batch.withColumn("_lk_n", F.row_number().over(w)).where("_lk_n = 1").drop("_lk_n", "_lk_file", "_lk_row")
    last.createOrReplaceTempView("lakectl_batch")
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in key)
    existing = spark.sql(f"SELECT {', '.join('t.' + quote(k) for k in key)} FROM {on_branch} t")
    matched = last.join(existing, key, "left_semi")
    deletes = F.col("_lk_op").isin(cdc["deleteWhen"]) if cdc else F.lit(False)
    updated = matched.where(~deletes).count()
    deleted = matched.where(deletes).count()
    inserted = last.where(~deletes).count() - updated
    names = [quote(f.name) for f in target.fields]
    is_delete = "s._lk_op IN (" + ", ".join("'" + v.replace("'", "''") + "'" for v in cdc["deleteWhen"]) + ")" if cdc else "false"
    spark.sql(
        f"MERGE INTO {on_branch} t USING lakectl_batch s ON {on} "
        f"WHEN MATCHED AND {is_delete} THEN DELETE "
        f"WHEN MATCHED THEN UPDATE SET {', '.join(f't.{n} = s.{n}' for n in names)} "
        f"WHEN NOT MATCHED AND NOT ({is_delete}) THEN INSERT ({', '.join(names)}) "
        f"VALUES ({', '.join('s.' + n for n in names)})")
    return {"rows_by_file": counts, "keys": keys, "superseded": rows - keys,
            "updated": updated, "deleted": deleted, "inserted": inserted}


def run_sql(spark, step, on_branch):
    out = {}
    if step.get("count"):
        n = spark.sql(f"SELECT count(*) FROM {on_branch} WHERE {step['count']}").collect()[0][0]
        out["matched"] = n
        limit = step.get("limit")
        if limit is not None and n > limit:
            fail(f"it would change {n} row(s), more than its limit {limit}")
        if n == 0:
            return out
    spark.sql(step["sql"].replace("{table}", on_branch))
    return out


def compact(spark, step, on_branch):
    files = spark.createDataFrame([(p,) for p in step["files"]], "path string")
    files.createOrReplaceTempView("lakectl_compact_files")
    spark.sql(
        f"INSERT INTO {on_branch} SELECT * FROM {on_branch} "
        f"WHERE _file IN (SELECT path FROM lakectl_compact_files)")
    return {}


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure is reported
        sys.stderr.write(traceback.format_exc())
        fail(f"{CONTEXT[0]}: {java_message(e)}")
