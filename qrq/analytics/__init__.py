"""Time-based scan analytics across many scan databases, read-only.

:func:`time_series` reads every database (schema in :mod:`qrq.analytics.scans`) and returns
plain dicts: per bucket the scans and the unique visitors, and the top templates,
domains, countries and devices of the whole range.

Why it is fast, and exact:

* The heavy work runs inside SQLite. Per database, one statement runs a small
  subquery per bucket on a covering index (``scans_time`` and friends): the
  bucket's boundaries are UTC instants computed with zoneinfo
  (:mod:`qrq.analytics.query`), so each is an index range scan, DST-correct, with
  nothing to sort. It returns the bucket's count and its visitor hashes glued into
  one string (``group_concat``).
* Unique visitors are exact. A visitor may scan in several databases, so counts
  cannot be added up; instead each bucket keeps the visitor hashes of every
  database as 8 bytes each (the schema stores them so, and a CHECK constraint
  guarantees it, so the glued bytes need no decoding; older shards with 16 hex
  digits go through ``bytes.fromhex``), and a Python set of 64-bit ints per bucket
  counts the distinct ones (``memoryview.cast("Q")``, in C): ~8 bytes per scan
  while reading, one bucket's set at a time. (HyperLogLog would be approximate and
  no faster here: its per-scan work would run in Python, or as a sort in SQLite.)
* The top-N counts come from one ``GROUP BY`` per database that walks the
  ``scans_dims`` index in order, so SQLite never sorts; SQLite also rolls its few
  thousand groups up per dimension, so Python only merges a few hundred rows.
* Two cores: the work is cut into *shares*. Share k of n takes every n-th run of
  consecutive buckets of every database (:func:`share_buckets`), so its visitor
  counts are final on their own
  and a share sends back a few kB. The top-N counts of each database go to
  whichever share is free first (work stealing, :mod:`qrq.analytics.worker`), so a
  share slowed down by other work on the machine does less of them. Share 0 runs
  in the job's own process, the others in child processes.

A database that is missing, locked, corrupt or not a scan database is skipped and
named in the result's ``warnings``. Connections are opened ``mode=ro``; *limit*
wraps each one (the task passes :func:`qrq.queue.time_limited`, which interrupts a
query once the job's time limit has passed).
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
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qrq.analytics.query import ReportQuery, plan_buckets
from qrq.analytics.scans import VISITOR_CHECK

TOP_N = 10
DIMENSIONS = ("templates", "domains", "countries", "devices")
_DIM_KEYS = {"templates": "template_id", "domains": "domain", "countries": "country",
             "devices": "device"}
INDEXES = ("scans_time", "scans_domain_time", "scans_template_time", "scans_dims")

MMAP_BYTES = 256 << 20  # per connection: address space, not memory
Limit = Callable[[sqlite3.Connection], contextlib.AbstractContextManager]
Progress = Callable[[int, int, str], None]


@dataclasses.dataclass
class DatabasePart:
    """What one database contributes: per-bucket counts and visitor bytes, top-N counts."""

    path: Path
    scans: dict[int, int] = dataclasses.field(default_factory=dict)
    visitors: dict[int, bytes] = dataclasses.field(default_factory=dict)
    dims: list[tuple] = dataclasses.field(default_factory=list)  # (dimension, key, count)
    warning: str | None = None
    skipped: bool = False  # could not be read at all


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


def time_series(paths: Iterable[Path], query: ReportQuery, *, processes: int = 1,
                limit: Limit | None = None, progress: Progress | None = None,
                busy_timeout: float = 5.0, seconds: float | None = None) -> dict[str, Any]:
    """The report for *query* over the databases at *paths*, as a JSON-able dict.

    With *processes* > 1 the shares run in that many child processes, whose queries
    stop after *seconds* (the time the job has left); otherwise here, each connection
    wrapped in *limit*. *progress* is called here with ``(done, total, stage)`` as
    databases are read and before the final counting; an exception it raises (a
    cancel, a time limit) stops the work.
    """
    from qrq.analytics import worker as analytics_worker

    began = time.perf_counter()
    paths = [Path(p) for p in paths]
    report = progress or (lambda done, total, stage: None)
    total = len(paths)

    def databases_read(done: float) -> None:
        report(int(done), total, f"databases {int(done)} of {total}")
        if done >= total:
            report(total, total, "aggregating")

    databases_read(0)
    if processes > 1 and total > 1:
        shares = analytics_worker.run_shares(paths, query, processes, databases_read,
                                             limit=limit, busy_timeout=busy_timeout,
                                             seconds=seconds)
    else:
        shares = [read_share(paths, query, limit=limit, progress=databases_read,
                             busy_timeout=busy_timeout)]
    return assemble(query, paths, shares, time.perf_counter() - began)


def read_share(paths: list[Path], query: ReportQuery, share: int = 0, shares: int = 1, *,
               limit: Limit | None = None, progress: Callable[[int], None] | None = None,
               busy_timeout: float = 5.0,
               take: Callable[[], int | None] | None = None) -> dict[str, Any]:
    """Read share *share* of *shares* (all of it by default) from every database and
    count its buckets' distinct visitors; a JSON-able dict for :func:`assemble`.

    Without *take*, the share also reads the top-N counts of the databases
    ``j % shares == share``, each with its buckets. With *take*, it reads its buckets
    of every database first, then the top-N counts of the databases ``take()``
    returns (shared with the other shares) until it returns None. *progress* gets
    the number of reads done: one per database, plus one per ``take()``.
    """
    buckets, end_ts = plan_buckets(query)
    bounds = [b.start_ts for b in buckets] + [end_ts]
    mine = share_buckets(share, shares, len(buckets))
    scans: Counter = Counter()
    visitor_bytes: dict[int, list[bytes]] = {i: [] for i in mine}
    dims: Counter = Counter()  # (dimension, key) -> scans, over this share's databases
    warnings, skipped = {}, {}
    done = 0

    def add(j: int, part: DatabasePart) -> None:
        nonlocal done
        if part.warning:
            warnings[str(paths[j])] = part.warning
        if part.skipped:
            skipped[str(paths[j])] = True
        scans.update(part.scans)
        for i, raw in part.visitors.items():
            visitor_bytes[i].append(raw)
        for dimension, key, count in part.dims:
            dims[dimension, key] += count
        done += 1
        if progress is not None:
            progress(done)

    for j, path in enumerate(paths):
        add(j, read_database(path, query, bounds, buckets=mine,
                             dims=take is None and j % shares == share, limit=limit,
                             busy_timeout=busy_timeout))
    while take is not None and (j := take()) is not None:
        add(j, read_database(paths[j], query, bounds, buckets=(), dims=True, limit=limit,
                             busy_timeout=busy_timeout))
    visitors = {}
    for i in mine:
        joined = b"".join(visitor_bytes.pop(i))  # one bucket's bytes and set at a time
        visitors[i] = len(set(memoryview(joined).cast("Q")))
    return {"scans": sorted(scans.items()), "visitors": sorted(visitors.items()),
            "dims": [(d, key, n) for (d, key), n in dims.items()], "warnings": warnings,
            "skipped": sorted(skipped)}


def share_buckets(share: int, shares: int, count: int) -> list[int]:
    """The buckets of share *share* of *shares*: runs of consecutive buckets, every
    *shares*-th run (4 runs per share), so each share reads its stretches of an index
    without touching the pages of the others' (every other day would make both read
    almost every page); growth over the range evens out, and the top-N work stealing
    absorbs what does not."""
    size = -(-count // (shares * 4)) if shares > 1 else max(count, 1)
    return [i for i in range(count) if (i // size) % shares == share]


def assemble(query: ReportQuery, paths: list[Path], shares: list[dict[str, Any]],
             seconds: float) -> dict[str, Any]:
    """The report from the shares' results."""
    buckets = query.buckets()
    scans, visitors = [0] * len(buckets), [0] * len(buckets)
    dims = {name: Counter() for name in DIMENSIONS}
    warnings, skipped = {}, set()
    for share in shares:
        for i, count in share["scans"]:
            scans[i] += count
        for i, count in share["visitors"]:
            visitors[i] = count
        for dimension, key, count in share["dims"]:
            dims[DIMENSIONS[dimension]][key] += count
        warnings.update(share["warnings"])
        skipped.update(share["skipped"])
    series = [{"bucket": b.start.isoformat(), "label": b.label, "start": _iso(b.start_ts),
               "scans": scans[i], "visitors": visitors[i]} for i, b in enumerate(buckets)]
    return {
        "params": query.to_dict(),
        "series": series,
        "totals": {"scans": sum(scans)},
        "top": {name: _top(name, counter) for name, counter in dims.items()},
        "databases": {"found": len(paths), "read": len(paths) - len(skipped),
                      "skipped": len(skipped)},
        "warnings": sorted(warnings.values()),
        "visitors": "exact: distinct visitor hashes per bucket across all databases",
        "seconds": round(seconds, 3),
    }


def read_database(path: Path, query: ReportQuery, bounds: list[int], *,
                  buckets: Iterable[int] | None = None, dims: bool = True,
                  limit: Limit | None = None, busy_timeout: float = 5.0) -> DatabasePart:
    """Read *buckets* (default: all) and, if *dims*, the top-N counts from one database.
    A database that cannot be read comes back with a ``warning`` and no data; a query
    interrupted by *limit* raises."""
    part = DatabasePart(Path(path))
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
    except sqlite3.Error as exc:
        return DatabasePart(part.path, warning=f"{part.path.name}: skipped: {exc}",
                            skipped=True)
    try:
        with contextlib.closing(conn), (limit or _no_limit)(conn):
            # Pages straight from the OS page cache instead of a copy of each (-10%
            # CPU). Safe for a reader that follows SQLite's locking: no writer can
            # shrink the file during a read transaction, and the map is checked
            # against the file's size at the start of the next one.
            conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
            _read(conn, part, query, bounds,
                  range(len(bounds) - 1) if buckets is None else buckets, dims)
    except sqlite3.Error as exc:
        if "interrupt" in str(exc):
            raise
        part = DatabasePart(part.path, warning=f"{part.path.name}: skipped: {exc}",
                            skipped=True)
    return part


# -- reading one database ------------------------------------------------------------

def _read(conn: sqlite3.Connection, part: DatabasePart, query: ReportQuery,
          bounds: list[int], buckets: Iterable[int], dims: bool) -> None:
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
    params = {"domain": query.domain, "template_id": query.template_id}
    first = max(0, bisect.bisect_right(bounds, lo) - 1)
    last = min(len(bounds) - 2, bisect.bisect_right(bounds, hi) - 1)
    wanted = [[i, bounds[i], bounds[i + 1]] for i in buckets if first <= i <= last]
    if wanted:
        # One statement per database: a correlated subquery per bucket, each an index
        # range scan; the buckets travel as one JSON parameter.
        params["buckets"] = json.dumps(wanted)
        packed = _packed_visitors(conn)
        for i, joined in conn.execute(_series_sql(query, indexes, packed), params):
            if joined is None:
                continue  # no scans
            if packed and len(joined) % 8 == 0:
                count, raw = len(joined) // 8, joined  # every hash is 8 bytes (CHECK)
            else:
                params["lo"], params["hi"] = bounds[i], bounds[i + 1]
                count, raw = _visitor_bytes(conn, query, indexes, params, joined)
            if count:
                part.scans[i], part.visitors[i] = count, raw
    if not dims:
        return
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


def _packed_visitors(conn: sqlite3.Connection) -> bool:
    """Whether the table's CHECK guarantees 8-byte visitor hashes (qrq's schema)."""
    row = conn.execute("select sql from sqlite_master where type = 'table' and "
                       "name = 'scans'").fetchone()
    return bool(row and row[0] and VISITOR_CHECK in " ".join(row[0].lower().split()))


def _bucket_sql(query: ReportQuery, indexes: set[str], what: str) -> str:
    if query.template_id is not None:
        index = "scans_template_time"
    elif query.domain is not None:
        index = "scans_domain_time"
    else:
        index = "scans_time"
    return (f"select {what} from scans{_indexed(index, indexes)} "
            f"where scanned_at >= :lo and scanned_at < :hi{_filters(query)}")


def _series_sql(query: ReportQuery, indexes: set[str], packed: bool) -> str:
    """Per bucket: the glued 8-byte hashes (*packed*; NULL when the bucket is empty),
    else ``count:hashes``, as a blob so that no value needs to be UTF-8."""
    what = ("group_concat(visitor_hash, '')" if packed else
            "count(*) || ':' || ifnull(group_concat(visitor_hash, ''), '')")
    bucket = _bucket_sql(query, indexes, f"cast({what} as blob)").replace(
        ":lo", "b.lo").replace(":hi", "b.hi")
    return ("with b(i, lo, hi) as (select json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]'), json_extract(value, '$[2]') "
            f"from json_each(:buckets)) select i, ({bucket}) from b")


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
                   params: dict, packed: bytes) -> tuple[int, bytes]:
    """A bucket's scan count and its visitor hashes as 8 bytes each, from ``count:``
    and the glued hashes: 16 hex digits each go through ``bytes.fromhex``; any other
    values take the slow path, one by one (:func:`visitor_key`)."""
    head, _, joined = packed.partition(b":")
    count = int(head) if head.isdigit() else -1
    if len(joined) == 16 * count:
        try:
            raw = bytes.fromhex(joined.decode("ascii"))
        except ValueError:
            raw = b""
        if len(raw) == 8 * count:
            return count, raw
    values = [value for value, in conn.execute(_bucket_sql(query, indexes, "visitor_hash"),
                                                params)]
    return len(values), b"".join(visitor_key(value) for value in values
                                 if value is not None)


def visitor_key(value: Any) -> bytes:
    """8 bytes identifying a visitor: its hash's bytes (8 bytes, or 16 hex digits), or
    a digest of an odd value."""
    if isinstance(value, bytes) and len(value) == 8:
        return value
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
