"""Time-based scan analytics across many scan databases, read-only.

:func:`time_series` reads every database (schema in :mod:`qrq.scans`) and returns
plain dicts: per bucket the scans and the unique visitors, and the top templates,
domains, countries and devices of the whole range.

Why it is fast, and exact:

* The heavy work runs inside SQLite, one small query per bucket on a covering
  index (``scans_time`` and friends): the bucket's boundaries are UTC instants
  computed with zoneinfo (:mod:`qrq.analytics_query`), so each query is an index
  range scan, DST-correct, with nothing to sort. It returns the bucket's count and
  its visitor hashes glued into one string (``group_concat``).
* Unique visitors are exact. A visitor may scan in several databases, so counts
  cannot be added up; instead each hash (16 hex digits) becomes 8 bytes
  (``bytes.fromhex``, in C), each bucket keeps the bytes of every database, and
  at the end a Python set of 64-bit ints per bucket counts the distinct ones
  (``memoryview.cast("Q")``, also in C). This costs ~8 bytes per scan while
  reading and one bucket's set at a time, so memory stays small. (HyperLogLog
  would be approximate and no faster here: its per-scan work would have to run in
  Python or as a sort in SQLite.)
* The top-N counts come from one ``GROUP BY`` per database that walks the
  ``scans_dims`` index in order, so SQLite never sorts; SQLite also rolls its few
  thousand groups up per dimension, so Python only merges a few hundred rows.
* Databases are read by a few threads: sqlite3 releases the GIL while a query
  runs, so the SQL of two databases runs on two cores.

A database that is missing, locked, corrupt or not a scan database is skipped and
named in the result's ``warnings``. Connections are opened ``mode=ro``; *limit*
wraps each one (the task passes :func:`qrq.queue.time_limited`, which interrupts
a query once the job's time limit has passed).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime
import glob
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from qrq.analytics_query import ReportQuery, plan_buckets

TOP_N = 10
DIMENSIONS = ("templates", "domains", "countries", "devices")
_DIM_KEYS = {"templates": "template_id", "domains": "domain", "countries": "country",
             "devices": "device"}
INDEXES = ("scans_time", "scans_domain_time", "scans_template_time", "scans_dims")

Limit = Callable[[sqlite3.Connection], contextlib.AbstractContextManager]
Progress = Callable[[int, int, str], None]


class Stopped(Exception):
    """The computation was stopped (time limit, cancel) before this database was read."""


@dataclasses.dataclass
class DatabasePart:
    """What one database contributes: per-bucket counts and visitor bytes, top-N counts."""

    path: Path
    scans: dict[int, int] = dataclasses.field(default_factory=dict)
    visitors: dict[int, bytes] = dataclasses.field(default_factory=dict)
    dims: list[tuple] = dataclasses.field(default_factory=list)  # (dimension, key, count)
    warning: str | None = None


def find_databases(location: str, data_dir: Path) -> list[Path]:
    """The scan databases at *location*: a directory (its ``*.db`` files) or a glob
    pattern (``/srv/scans/*/scans.sqlite``); relative to *data_dir* unless absolute.
    Empty means ``<data>/analytics/``."""
    path = Path(data_dir) / (location.strip() or "analytics")
    if any(char in str(path) for char in "*?["):
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    if path.is_dir():
        return sorted(path.glob("*.db"))
    return [path] if path.exists() else []


def read_database(path: Path, query: ReportQuery, bounds: list[int], *,
                  limit: Limit | None = None, stop: threading.Event | None = None,
                  busy_timeout: float = 5.0) -> DatabasePart:
    """Read one database's share of the report; a database that cannot be read comes
    back with a ``warning`` and no data. A query interrupted by *limit* raises."""
    if stop is not None and stop.is_set():
        raise Stopped(str(path))
    part = DatabasePart(Path(path))
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error as exc:
        part.warning = f"{Path(path).name}: skipped: {exc}"
        return part
    try:
        with contextlib.closing(conn), (limit or _no_limit)(conn):
            _read(conn, part, query, bounds, stop)
    except sqlite3.Error as exc:
        if "interrupt" in str(exc):  # the time limit: no other database is opened
            if stop is not None:
                stop.set()
            raise
        part = DatabasePart(part.path, warning=f"{part.path.name}: skipped: {exc}")
    return part


def time_series(paths: Iterable[Path], query: ReportQuery, *, threads: int = 2,
                limit: Limit | None = None, progress: Progress | None = None,
                busy_timeout: float = 5.0) -> dict[str, Any]:
    """The report for *query* over the databases at *paths*, as a JSON-able dict.

    *progress* is called from this thread with ``(done, total, stage)`` after each
    database and before the final aggregation; an exception it raises (a cancel,
    a time limit) stops the remaining reads.
    """
    began = time.perf_counter()
    paths = list(paths)
    buckets, end_ts = plan_buckets(query)
    bounds = [b.start_ts for b in buckets] + [end_ts]
    report = progress or (lambda done, total, stage: None)
    scans = [0] * len(buckets)
    visitor_bytes: list[list[bytes]] = [[] for _ in buckets]
    dims = {name: Counter() for name in DIMENSIONS}
    warnings, read = [], 0

    def add(part: DatabasePart) -> None:
        nonlocal read
        if part.warning:
            warnings.append(part.warning)
            if not part.scans and not part.dims:
                return
        read += 1
        for i, count in part.scans.items():
            scans[i] += count
        for i, raw in part.visitors.items():
            visitor_bytes[i].append(raw)
        for dimension, key, count in part.dims:
            dims[DIMENSIONS[dimension]][key] += count

    report(0, len(paths), f"databases 0 of {len(paths)}")
    stop = threading.Event()
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="qrq-analytics")
    try:
        pending = {pool.submit(read_database, path, query, bounds, limit=limit, stop=stop,
                               busy_timeout=busy_timeout) for path in paths}
        done = 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    part = future.result()
                except Stopped:
                    continue  # the read that stopped the others raises its own error
                add(part)
                done += 1
                report(done, len(paths), f"databases {done} of {len(paths)}")
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)

    report(len(paths), len(paths), "aggregating")
    series = []
    for i, bucket in enumerate(buckets):
        joined = b"".join(visitor_bytes[i])
        visitor_bytes[i] = []  # one bucket's bytes and set alive at a time
        series.append({"bucket": bucket.start.isoformat(), "label": bucket.label,
                       "start": _iso(bucket.start_ts), "scans": scans[i],
                       "visitors": len(set(memoryview(joined).cast("Q")))})
    return {
        "params": query.to_dict(),
        "series": series,
        "totals": {"scans": sum(scans)},
        "top": {name: _top(name, counter) for name, counter in dims.items()},
        "databases": {"found": len(paths), "read": read, "skipped": len(paths) - read},
        "warnings": sorted(warnings),
        "visitors": "exact: distinct visitor hashes per bucket across all databases",
        "seconds": round(time.perf_counter() - began, 3),
    }


# -- reading one database ------------------------------------------------------------

def _read(conn: sqlite3.Connection, part: DatabasePart, query: ReportQuery,
          bounds: list[int], stop: threading.Event | None) -> None:
    indexes = {row[1] for row in conn.execute("pragma index_list('scans')")}
    # Two subqueries: SQLite answers a lone min() or max() from the index, not both at once.
    lo, hi = conn.execute("select (select min(scanned_at) from scans), "
                          "(select max(scanned_at) from scans)").fetchone()
    missing = [name for name in INDEXES if name not in indexes]
    if missing:
        part.warning = (f"{part.path.name}: missing index {', '.join(missing)} "
                        "(read, but slowly)")
    if lo is None or hi < bounds[0] or lo >= bounds[-1]:
        return  # no scans in the range
    if stop is not None and stop.is_set():
        raise Stopped(str(part.path))
    params = {"domain": query.domain, "template_id": query.template_id}
    first = max(0, bisect.bisect_right(bounds, lo) - 1)
    last = min(len(bounds) - 2, bisect.bisect_right(bounds, hi) - 1)
    # One statement per database: a correlated subquery per bucket, each an index
    # range scan; the buckets travel as one JSON parameter.
    params["buckets"] = json.dumps([[i, bounds[i], bounds[i + 1]]
                                    for i in range(first, last + 1)])
    for i, packed in conn.execute(_series_sql(query, indexes), params):
        count, _, joined = packed.partition(":")
        if count != "0":
            params["lo"], params["hi"] = bounds[i], bounds[i + 1]
            part.scans[i] = int(count)
            part.visitors[i] = _visitor_bytes(conn, query, indexes, params, int(count),
                                              joined)
    # The time condition only costs when the range cuts into this database.
    within = lo >= bounds[0] and hi < bounds[-1]
    params["lo"], params["hi"] = bounds[0], bounds[-1]
    part.dims = conn.execute(_dims_sql(query, indexes, within), params).fetchall()


def _filters(query: ReportQuery) -> str:
    sql = ""
    if query.template_id is not None:
        sql += " and template_id = :template_id"
    if query.domain is not None:
        sql += " and domain = :domain"
    return sql


def _indexed(name: str, indexes: set[str]) -> str:
    return f" indexed by {name}" if name in indexes else ""


def _bucket_sql(query: ReportQuery, indexes: set[str]) -> str:
    if query.template_id is not None:
        index = "scans_template_time"
    elif query.domain is not None:
        index = "scans_domain_time"
    else:
        index = "scans_time"
    return ("select count(*), group_concat(visitor_hash, '') from scans"
            f"{_indexed(index, indexes)} where scanned_at >= :lo and scanned_at < :hi"
            f"{_filters(query)}")


def _series_sql(query: ReportQuery, indexes: set[str]) -> str:
    count = _bucket_sql(query, indexes).replace(
        "count(*), group_concat(visitor_hash, '')",
        "count(*) || ':' || ifnull(group_concat(visitor_hash, ''), '')").replace(
        ":lo", "b.lo").replace(":hi", "b.hi")
    return ("with b(i, lo, hi) as (select json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]'), json_extract(value, '$[2]') "
            f"from json_each(:buckets)) select i, ({count}) from b")


def _dims_sql(query: ReportQuery, indexes: set[str], within: bool) -> str:
    where = "1" if within else "scanned_at >= :lo and scanned_at < :hi"
    groups = ("select template_id, domain, country, device, count(*) as n from scans"
              f"{_indexed('scans_dims', indexes)} where {where}{_filters(query)} "
              "group by template_id, domain, country, device")
    return (f"with d as materialized ({groups}) "
            "select 0, template_id, sum(n) from d group by template_id union all "
            "select 1, domain, sum(n) from d group by domain union all "
            "select 2, country, sum(n) from d group by country union all "
            "select 3, device, sum(n) from d group by device")


def _visitor_bytes(conn: sqlite3.Connection, query: ReportQuery, indexes: set[str],
                   params: dict, count: int, joined: str | None) -> bytes:
    """The bucket's visitor hashes as 8 bytes each (``bytes.fromhex`` of the glued
    string); values that are not 16 hex digits take the slow path, one by one."""
    if joined and len(joined) == 16 * count:
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = b""
        if len(raw) == 8 * count:
            return raw
    sql = _bucket_sql(query, indexes).replace(
        "count(*), group_concat(visitor_hash, '')", "visitor_hash")
    return b"".join(visitor_key(value) for value, in conn.execute(sql, params)
                    if value is not None)


def visitor_key(value: Any) -> bytes:
    """8 bytes identifying a visitor: its hash's bytes, or a digest of an odd value."""
    if isinstance(value, str) and len(value) == 16:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) == 8:
            return raw
    return hashlib.blake2b(str(value).encode(), digest_size=8).digest()


@contextlib.contextmanager
def _no_limit(conn: sqlite3.Connection):
    yield conn


def _top(name: str, counter: Counter) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda item: (-item[1], str(item[0])))[:TOP_N]
    return [{_DIM_KEYS[name]: key, "scans": count} for key, count in ranked]


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
