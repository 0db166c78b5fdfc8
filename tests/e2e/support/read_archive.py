"""Reads a sluice archive with DuckDB, independently of sluice's own reader.

    python3 read_archive.py <archive root> <zstd|gzip|none|parquet>

Reads every object under the root with DuckDB's newline-delimited JSON reader (or its Parquet
reader) and Hive partitioning (tenant=/dt=/hour= directories), and prints one JSON document:

    {"count": N, "tenants": [...], "files": N,
     "records": [{"tenant", "ts", "time", "labels", "structured_metadata", "line",
                  "dt", "hour", "file"}, ...]}

`ts` must come back as the string it was written as (for Parquet: the nanoseconds of the
TIMESTAMP_NS column, as a string; `time` is null, Parquet has no such column); `dt` (a date, as YYYY-MM-DD) and `hour` (a number) are
the partition values DuckDB took from the path; `file` is the object's path relative to the root.
"""

import json
import os
import sys

import duckdb

EXTENSIONS = {"zstd": "ndjson.zst", "gzip": "ndjson.gz", "none": "ndjson", "parquet": "parquet"}


def main():
    root, compression = sys.argv[1], sys.argv[2]
    pattern = os.path.join(root, "**", "*." + EXTENSIONS[compression])
    con = duckdb.connect()
    if compression == "parquet":
        source = (
            "(SELECT tenant, CAST(epoch_ns(ts) AS VARCHAR) AS ts, NULL AS time, labels, structured_metadata, "
            "line, dt, hour, filename FROM read_parquet(?, hive_partitioning = true, "
            "hive_types = {'dt': 'DATE', 'hour': 'INTEGER'}, filename = true))"
        )
        params = [pattern]
    else:
        source = (
            "read_json(?, format = 'newline_delimited', compression = ?, hive_partitioning = true, "
            "hive_types = {'dt': 'DATE', 'hour': 'INTEGER'}, filename = true, columns = {'tenant': 'VARCHAR', 'ts': 'VARCHAR', 'time': 'VARCHAR', "
            "'labels': 'MAP(VARCHAR, VARCHAR)', 'structured_metadata': 'MAP(VARCHAR, VARCHAR)', "
            "'line': 'VARCHAR'})"
        )
        params = [pattern, compression]
    count, tenants, files = con.execute(
        f"SELECT count(*), list(DISTINCT tenant ORDER BY tenant), count(DISTINCT filename) FROM {source}",
        params,
    ).fetchone()
    cursor = con.execute(
        "SELECT tenant, ts, time, labels, structured_metadata, line, CAST(dt AS VARCHAR), hour, filename "
        f"FROM {source} ORDER BY tenant, ts, line",
        params,
    )
    records = []
    for tenant, ts, time, labels, metadata, line, dt, hour, filename in cursor.fetchall():
        records.append(
            {
                "tenant": tenant,
                "ts": ts,
                "time": time,
                "labels": dict(labels),
                "structured_metadata": dict(metadata),
                "line": line,
                "dt": dt,
                "hour": hour,
                "file": os.path.relpath(filename, root),
            }
        )
    json.dump({"count": count, "tenants": tenants, "files": files, "records": records}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
