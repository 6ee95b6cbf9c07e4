"""Reading one scan database: its buckets' counts and visitor hashes, its top-N counts.

The design is described in :mod:`qrq.analytics`. Every bucket's hashes come from
``scans_time``'s pages (:mod:`qrq.analytics.btree`) when the report is over all domains
and templates and the file can be read so; otherwise one statement per database runs a
subquery per bucket on a covering index and returns the bucket's visitor hashes glued
into one blob. One ``GROUP BY`` walks ``scans_dims`` for the top-N counts. Connections
are opened ``mode=ro``, and every statement of a database runs in one read
transaction.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qrq.analytics import btree
from qrq.analytics.query import ReportQuery
from qrq.analytics.scans import VISITOR_CHECK

INDEXES = ("scans_time", "scans_domain_time", "scans_template_time", "scans_dims")
MMAP_BYTES = 256 << 20  # per connection: address space, not memory
# Wraps each connection while it is read, e.g. to stop its queries at a deadline
# (:func:`qrq.sqlite_deadline.interrupt_when`).
Limit = Callable[[sqlite3.Connection], contextlib.AbstractContextManager]


@dataclasses.dataclass
class DatabasePart:
    """What one database contributes: per-bucket counts and visitor hashes, top-N counts."""

    path: Path
    scans: dict[int, int] = dataclasses.field(default_factory=dict)
    # Per bucket: its visitor hashes, a numpy array of uint64 (see hash_array).
    visitors: dict[int, Any] = dataclasses.field(default_factory=dict)
    dims: list[tuple] = dataclasses.field(default_factory=list)  # (dimension, key, count)
    warning: str | None = None
    skipped: bool = False  # could not be read at all


def read_database(path: Path, query: ReportQuery, bounds: list[int], *,
                  buckets: Iterable[int] | None = None, dims: bool = True,
                  limit: Limit | None = None, busy_timeout: float = 5.0) -> DatabasePart:
    """Read *buckets* (default: all) and, if *dims*, the top-N counts from one database.
    A database that cannot be read comes back with a ``warning`` (which does not name
    it: the report names it) and no data; a query interrupted by *limit* raises."""
    part = DatabasePart(Path(path))
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    # The file's own descriptor outlives the connection (see btree).
    with btree.DatabaseFile(part.path) as file:
        if file.special:
            return DatabasePart(part.path, warning="skipped: not a regular file",
                                skipped=True)
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
        except sqlite3.Error as exc:
            return DatabasePart(part.path, warning=f"skipped: {exc}", skipped=True)
        try:
            with contextlib.closing(conn), limit(conn) if limit else contextlib.nullcontext():
                # Pages straight from the OS page cache instead of a copy of each (-10%
                # CPU). Safe for a reader that follows SQLite's locking: no writer can
                # shrink the file during a read transaction, and the map is checked
                # against the file's size at the start of the next one.
                conn.execute(f"pragma mmap_size = {MMAP_BYTES}")
                conn.execute("begin")  # one snapshot for every statement and the pages
                _read(conn, file, part, query, bounds,
                      range(len(bounds) - 1) if buckets is None else buckets, dims)
        except sqlite3.Error as exc:
            if "interrupt" in str(exc):
                raise
            part = DatabasePart(part.path, warning=f"skipped: {exc}", skipped=True)
    return part


# -- reading one database ------------------------------------------------------------

def _read(conn: sqlite3.Connection, file: btree.DatabaseFile, part: DatabasePart,
          query: ReportQuery, bounds: list[int], buckets: Iterable[int], dims: bool) -> None:
    indexes, packed, time_root = _schema(conn)
    # Two subqueries: SQLite answers a lone min() or max() from the index, not both at once.
    lo, hi = conn.execute("select (select min(scanned_at) from scans), "
                          "(select max(scanned_at) from scans)").fetchone()
    missing = [name for name in INDEXES if name not in indexes]
    if missing:
        part.warning = f"missing index {', '.join(missing)} (read, but slowly)"
    if lo is None or hi < bounds[0] or lo >= bounds[-1]:
        return  # no scans in the range
    params = {"domain": query.domain, "template_id": query.template_id}
    first = max(0, bisect.bisect_right(bounds, lo) - 1)
    last = min(len(bounds) - 2, bisect.bisect_right(bounds, hi) - 1)
    buckets = tuple(sorted(buckets))
    wanted = _buckets_json(tuple(bounds), buckets, first, last)
    if wanted and packed and time_root and not _filters(query):
        entries = btree.read_time_hashes(file, conn, time_root,
                                         _runs(bounds, buckets, first, last))
        if entries is not None:
            _split(part, entries, bounds, [i for i in buckets if first <= i <= last])
            wanted = None  # every bucket read from the pages: no statement
    if wanted:
        # One statement per database: a correlated subquery per bucket, each an index
        # range scan; the buckets travel as one JSON parameter.
        params["buckets"] = wanted
        for i, joined in conn.execute(_series_sql(query, indexes, packed), params):
            if joined is None:
                continue  # no scans
            if packed and len(joined) % 9 == 8:
                # Every hash is 8 bytes (the CHECK), so they come glued as they are.
                count, raw = (len(joined) + 1) // 9, joined
            else:
                params["lo"], params["hi"] = bounds[i], bounds[i + 1]
                count, raw = _visitor_bytes(conn, query, indexes, params, joined)
            if count:
                part.scans[i] = count
            if raw:
                part.visitors[i] = hash_array(raw)
    if not dims:
        return
    # The time condition only costs when the range cuts into this database.
    within = lo >= bounds[0] and hi < bounds[-1]
    params["lo"], params["hi"] = bounds[0], bounds[-1]
    part.dims = conn.execute(_dims_sql(query, indexes, within), params).fetchall()


@functools.lru_cache(maxsize=8)
def _buckets_json(bounds: tuple[int, ...], buckets: tuple[int, ...], first: int,
                  last: int) -> str | None:
    """``[i, start, end]`` of each of *buckets* from *first* to *last*, as JSON (None if
    there are none): made once for the databases that cover a report's whole range,
    most of them, instead of once each."""
    wanted = [[i, bounds[i], bounds[i + 1]] for i in buckets if first <= i <= last]
    return json.dumps(wanted) if wanted else None


def _filters(query: ReportQuery) -> str:
    sql = ""
    if query.template_id is not None:
        sql += " and template_id = :template_id"
    if query.domain is not None:
        sql += " and domain = :domain"
    return sql


def _indexed(name: str, indexes: set[str]) -> str:
    return f" indexed by {name}" if name in indexes else ""


def _schema(conn: sqlite3.Connection) -> tuple[set[str], bool, int | None]:
    """The names of the ``scans`` table's indexes, whether its CHECK guarantees 8-byte
    visitor hashes (qrq's schema), and the root page of ``scans_time`` if it is qrq's
    index (:mod:`~qrq.analytics.btree` reads it): one read of ``sqlite_master``, not
    several statements to prepare per database."""
    indexes, packed, time_root = set(), False, None
    for kind, name, root, sql in conn.execute(
            "select type, name, rootpage, sql from sqlite_master "
            "where tbl_name = 'scans' collate nocase and type in ('table', 'index')"):
        if kind == "index":
            indexes.add(name)
            if name == "scans_time" and "".join((sql or "").lower().split()) == \
                    btree.INDEX_SQL:
                time_root = root
        elif sql:
            packed = VISITOR_CHECK in " ".join(sql.lower().split())
    return indexes, packed, time_root


def _runs(bounds: list[int], buckets: tuple[int, ...], first: int,
          last: int) -> list[tuple[int, int]]:
    """The time ranges of *buckets* from *first* to *last*, consecutive ones joined."""
    runs: list[tuple[int, int]] = []
    for i in buckets:
        if first <= i <= last:
            if runs and runs[-1][1] == bounds[i]:
                runs[-1] = (runs[-1][0], bounds[i + 1])
            else:
                runs.append((bounds[i], bounds[i + 1]))
    return runs


def _split(part: DatabasePart, entries: tuple[Any, Any], bounds: list[int],
           buckets: list[int]) -> None:
    """Each bucket's count and hashes from the index's entries (in time order)."""
    import numpy

    times, hashes = entries
    starts = numpy.searchsorted(times, [bounds[i] for i in buckets]).tolist()
    ends = numpy.searchsorted(times, [bounds[i + 1] for i in buckets]).tolist()
    for i, start, end in zip(buckets, starts, ends, strict=True):
        if end > start:
            part.scans[i] = end - start
            part.visitors[i] = hashes[start:end]


def hash_array(glued: bytes) -> Any:
    """The hashes in *glued* (8 bytes each, one byte between, as ``group_concat``
    glues them) as a numpy array of uint64: a view of *glued* that steps over the
    separators, nothing copied."""
    # numpy works on the hashes as 64-bit integers in C, several times faster than a
    # set of Python ints. Imported here: only a report needs it (0.1 s, ~20 MB).
    import numpy

    return numpy.ndarray((len(glued) + 1) // 9, "<u8", glued, 0, (9,))


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
    """Per bucket: the 8-byte hashes glued with a comma between (*packed*; NULL when
    the bucket is empty), else ``count:hashes``, as a blob so that no value needs to be
    UTF-8. (The default separator: ``group_concat(x, '')`` costs up to 20 ns a row more.)"""
    what = ("group_concat(visitor_hash)" if packed else
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
    """A bucket's scan count and its visitor hashes as 8 bytes each, a comma between,
    from ``count:`` and the glued hashes: 16 hex digits each go through
    ``bytes.fromhex``; any other values take the slow path, one by one
    (:func:`visitor_key`)."""
    head, _, joined = packed.partition(b":")
    count = int(head) if head.isdigit() else -1
    if len(joined) == 16 * count:
        try:
            raw = bytes.fromhex(joined.decode("ascii"))
        except ValueError:
            raw = b""
        if len(raw) == 8 * count:
            return count, b",".join(raw[k:k + 8] for k in range(0, len(raw), 8))
    values = [value for value, in conn.execute(_bucket_sql(query, indexes, "visitor_hash"),
                                                params)]
    return len(values), b",".join(visitor_key(value) for value in values
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
