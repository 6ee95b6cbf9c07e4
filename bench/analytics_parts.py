"""Where a report's time goes, part by part, against the SQLite floor's parts.

Each part runs alone over every database (the demo scan databases of
``bench/analytics.py``, the same daily report over a year in UTC), in this process, with
the statements of ``qrq/analytics/shard.py``; CPU seconds, median of ``--repeats``
interleaved rounds. The parts:

- qrq's series: each database opened as qrq does and every bucket's hashes taken from
  ``scans_time``'s pages (:mod:`qrq.analytics.btree`), the floor's
  ``count(visitor_hash)`` over the whole range, and the ways through SQLite that qrq
  used before (its ``group_concat(visitor_hash)`` per bucket, the SQL path it still
  takes for other databases) with variants that show what handing the hashes out
  costs: ``count`` or ``max`` per bucket, ``group_concat(x, '')`` per bucket, one
  ``group_concat`` over the whole range;
- the distinct count of every bucket's hashes: qrq's (numpy, slots then a sort of what
  is left, :func:`qrq.analytics.shares.count_distinct`), a numpy sort of every hash, and
  a Python set of ints;
- the top-N ``GROUP BY`` (the same statement in both);
- opening each database as qrq does (pragma, schema, min/max), then closing it.

From them: the lower bound of qrq's one-process report over the floor, (top-N + qrq's
series with its open + count) / (top-N + floor count + open), which
``bench/analytics.py`` measures whole. Run: ``flock /tmp/qrq-bench.lock .venv/bin/python
bench/analytics_parts.py --data DIR --dbs 40`` (DIR as given to ``bench/analytics.py``;
written there if missing). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from pathlib import Path

import analytics as bench
import numpy
from _support import load_average

from qrq.analytics import btree, shard
from qrq.analytics.query import parse_query, plan_buckets
from qrq.analytics.shard import hash_array
from qrq.analytics.shares import count_distinct

QRQ_SERIES = "group_concat(visitor_hash)"


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute(f"pragma mmap_size = {shard.MMAP_BYTES}")
    return conn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the databases (DIR/main), as bench/analytics.py --data")
    parser.add_argument("--dbs", type=int, default=40)
    parser.add_argument("--scans", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"load average {load_average()}; sqlite {sqlite3.sqlite_version}", flush=True)
    paths = bench.generate(args.data / "main", args.dbs, args.scans)[:args.dbs]
    query = parse_query(bench.FULL)
    buckets, end = plan_buckets(query)
    bounds = [b.start_ts for b in buckets] + [end]
    params = {"buckets": json.dumps([[i, bounds[i], bounds[i + 1]]
                                     for i in range(len(buckets))]),
              "lo": bounds[0], "hi": bounds[-1], "domain": None, "template_id": None}
    indexes = set(shard.INDEXES)
    series = shard._series_sql(query, indexes, packed=True)
    assert QRQ_SERIES in series, "qrq's series statement changed: update this script"
    whole = ("select {} from scans indexed by scans_time "
             "where scanned_at >= :lo and scanned_at < :hi")
    statements = {
        "floor: count(visitor_hash), whole range": whole.format("count(visitor_hash)"),
        "SQL path: group_concat per bucket": series,
        "count(visitor_hash) per bucket": series.replace(QRQ_SERIES, "count(visitor_hash)"),
        "max(visitor_hash) per bucket": series.replace(QRQ_SERIES, "max(visitor_hash)"),
        "group_concat(x, '') per bucket": series.replace(QRQ_SERIES,
                                                          "group_concat(visitor_hash, '')"),
        "group_concat, whole range": whole.format(f"cast({QRQ_SERIES} as blob)"),
        "top-N GROUP BY (both)": shard._dims_sql(query, indexes, within=True),
    }
    conns = [connect(p) for p in paths]

    def hashes_by_bucket(sql: str) -> dict[int, list[bytes]]:
        found: dict[int, list[bytes]] = {}
        for conn in conns:
            for i, blob in conn.execute(sql, params):
                if blob:
                    found.setdefault(i, []).append(blob)
        return found

    # Every bucket's hashes from every database: with a comma between, as qrq's counting
    # gets them, and glued without one, as the set of ints took them until 2026-12-04.
    glued = hashes_by_bucket(series)
    from_pages: dict[int, list] = {}
    read = btree.read_time_hashes
    unread = []  # databases the pages could not be read from (SQLite read them)
    btree.read_time_hashes = lambda file, *args: read(file, *args) or unread.append(file)
    for path in paths:
        for i, hashes in shard.read_database(path, query, bounds, dims=False).visitors.items():
            from_pages.setdefault(i, []).append(hashes)
    btree.read_time_hashes = read
    assert not unread, f"{len(unread)} databases not read from their pages"
    assert sum(len(a) for arrays in from_pages.values() for a in arrays) == \
        sum(len(b) + 1 for parts_ in glued.values() for b in parts_) // 9
    unseparated = hashes_by_bucket(statements["group_concat(x, '') per bucket"])

    def run_statement(sql: str) -> None:
        for conn in conns:
            conn.execute(sql, params).fetchall()

    def qrq_count() -> None:
        for arrays in from_pages.values():
            count_distinct(arrays)

    def qrq_series() -> None:  # as a report reads each database, without the top-N
        for path in paths:
            shard.read_database(path, query, bounds, dims=False)

    def sort_count() -> None:
        for parts in glued.values():
            hashes = numpy.sort(hash_array(b",".join(parts)))
            int(numpy.count_nonzero(hashes[1:] != hashes[:-1])) + 1

    def set_count() -> None:
        for parts in unseparated.values():
            len(set(memoryview(b"".join(parts)).cast("Q")))

    def open_close() -> None:  # qrq's reader with nothing to read but the schema and range
        for path in paths:
            shard.read_database(path, query, bounds, buckets=(), dims=False)

    parts = {name: (lambda sql=sql: run_statement(sql)) for name, sql in statements.items()}
    parts["qrq: open + series from the pages"] = qrq_series
    parts["qrq: distinct count (numpy)"] = qrq_count
    parts["distinct count, numpy sort of every hash"] = sort_count
    parts["distinct count, set of Python ints"] = set_count
    parts["open, schema, min/max, close (both)"] = open_close
    for fn in parts.values():  # once untimed: numpy's import, the statement caches
        fn()
    cpu: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.repeats):
        for name, fn in parts.items():
            began = time.process_time()
            fn()
            cpu[name].append(time.process_time() - began)
    med = {name: statistics.median(values) for name, values in cpu.items()}
    hashes = sum(len(b) + 1 for parts_ in glued.values() for b in parts_) // 9
    print(f"\n{len(paths)} databases, {hashes:,} scans, {len(buckets)} daily buckets; "
          f"CPU seconds, median of {args.repeats}")
    for name, value in med.items():
        print(f"  {name:45s} {value:6.3f}   ({' '.join(f'{v:.3f}' for v in cpu[name])})")
    top, opened = med["top-N GROUP BY (both)"], med["open, schema, min/max, close (both)"]
    count = med["floor: count(visitor_hash), whole range"]
    floor = top + count + opened
    series_part = top + med["qrq: open + series from the pages"]
    counting = med["qrq: distinct count (numpy)"]
    bound = (series_part + counting) / floor
    sql_path = (top + med["SQL path: group_concat per bucket"] + opened + counting) / floor
    pages = med["qrq: open + series from the pages"] - opened
    extra = med["SQL path: group_concat per bucket"] - count
    print(f"qrq's bound over the floor: {bound:.2f}x (on the SQL path {sql_path:.2f}x); "
          f"the series alone: {series_part / floor:.2f}x; per scan, the pages "
          f"cost {(pages - count) / hashes * 1e9:+.0f} ns against the floor's count, "
          f"group_concat per bucket {extra / hashes * 1e9:+.0f} ns, the numpy count "
          f"{counting / hashes * 1e9:.0f} ns")
    print(json.dumps({"bench": "analytics_parts", "load_average": load_average(),
                      "dbs": len(paths), "scans": hashes, "cpu_s": {
                          name: round(value, 4) for name, value in med.items()},
                      "bound_vs_floor": round(bound, 3),
                      "sql_path_bound_vs_floor": round(sql_path, 3),
                      "series_alone_vs_floor": round(series_part / floor, 3)}))
    for conn in conns:
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
