"""Time-based scan analytics across many scan databases, read-only.

:func:`time_series` reads every database (schema in :mod:`qrq.analytics.scans`) and returns
plain dicts: per bucket the scans and the unique visitors, and the top templates,
domains, countries and devices of the whole range.

Why it is fast, and exact:

* Each bucket is a range of ``scans_time`` (and friends), a covering index: the
  bucket's boundaries are UTC instants computed with zoneinfo
  (:mod:`qrq.analytics.query`), so each is an index range scan, DST-correct, with
  nothing to sort.
* The visitor hashes come out of the index without SQLite handing out each one (which
  cost more than reading the index): for a report over all domains and templates,
  numpy reads the entries of ``scans_time`` straight from the file's pages
  (:mod:`qrq.analytics.btree`), inside the connection's read transaction and only
  while the file alone holds its snapshot; otherwise one statement per database runs
  a small subquery per bucket and returns the bucket's hashes glued into one string
  (``group_concat``, a comma between), whose length gives the bucket's count.
* Unique visitors are exact. A visitor may scan in several databases, so counts
  cannot be added up; instead each bucket keeps the visitor hashes of every
  database as 8 bytes each (the schema stores them so, and a CHECK constraint
  guarantees it, so they need no decoding; older shards with 16 hex digits go
  through ``bytes.fromhex``), and numpy counts the distinct ones as 64-bit
  integers, in C (:func:`qrq.analytics.shares.count_distinct`): each hash in a table
  slot picked by its bits, a sort only for the few that collide; ~8 bytes per scan
  held while reading (9 on the SQL path), one bucket's hashes counted at a time.
  (HyperLogLog would be approximate and no faster here.)
* The top-N counts come from one ``GROUP BY`` per database that walks the
  ``scans_dims`` index in order, so SQLite never sorts; SQLite also rolls its few
  thousand groups up per dimension, so Python only merges a few hundred rows.
* Two cores: the work is cut into *shares*. Share k of n takes every n-th run of
  consecutive buckets of every database (:func:`share_buckets`), so its visitor
  counts are final on their own and a share sends back a few kB. The top-N counts
  of each database go to whichever share is free first (work stealing,
  :mod:`qrq.analytics.worker`), so a share slowed down by other work on the machine
  does less of them. A job runs every share in a child process, so the consumer's
  worker process keeps its memory; elsewhere (the CLI's ``--inline``) share 0 runs
  in the calling process.

A database that is missing, locked, corrupt or not a scan database is skipped and
named in the result's ``warnings`` by its path below the scan directory (never the
server's absolute path). Connections are opened ``mode=ro``; *limit* wraps each one
(the task stops its queries at the job's time limit with
:func:`qrq.sqlite_deadline.interrupt_when`).

The modules, each importing only those below it: this one (the report) ->
:mod:`~qrq.analytics.worker` (the child processes) -> :mod:`~qrq.analytics.shares`
(a share of the work) -> :mod:`~qrq.analytics.shard` (reading one database) ->
:mod:`~qrq.analytics.btree` (an index read from the file's pages),
:mod:`~qrq.analytics.query` (what a report asks for) and
:mod:`~qrq.analytics.scans` (the databases' schema). :mod:`~qrq.analytics.cache`
and :mod:`~qrq.analytics.requesters` keep reports and their jobs in the queue
database.
"""

from __future__ import annotations

import datetime
import glob
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qrq.analytics import worker
from qrq.analytics.query import ReportQuery
from qrq.analytics.shard import INDEXES, Limit, read_database, visitor_key
from qrq.analytics.shares import read_share, share_buckets

__all__ = ["INDEXES", "assemble", "find_databases", "read_database", "read_share",
           "scan_root", "share_buckets", "time_series", "visitor_key"]

TOP_N = 10
DIMENSIONS = ("templates", "domains", "countries", "devices")
_DIM_KEYS = {"templates": "template_id", "domains": "domain", "countries": "country",
             "devices": "device"}
_WILDCARDS = "*?["

Progress = Callable[[int, int, str], None]


def find_databases(location: str, data_dir: Path) -> list[Path]:
    """The scan databases at *location*: a directory (its ``*.db`` files) or a glob
    pattern (``/srv/scans/*/scans.sqlite``); relative to *data_dir* unless absolute.
    Empty means ``<data>/analytics/``."""
    path = _location(location, data_dir)
    if any(char in str(path) for char in _WILDCARDS):
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    if path.is_dir():
        return sorted(path.glob("*.db"))
    return [path] if path.exists() else []


def scan_root(location: str, data_dir: Path) -> Path:
    """The directory a report names the databases at *location* relative to: the
    directory itself, the part of a glob pattern before its first wildcard, or a
    single file's directory."""
    path = _location(location, data_dir)
    for k, part in enumerate(path.parts):
        if any(char in part for char in _WILDCARDS):
            return Path(*path.parts[:k])
    return path if path.is_dir() else path.parent


def time_series(paths: Iterable[Path], query: ReportQuery, *, processes: int = 1,
                limit: Limit | None = None, progress: Progress | None = None,
                busy_timeout: float = 5.0, seconds: float | None = None,
                root: Path | None = None, here: bool = True) -> dict[str, Any]:
    """The report for *query* over the databases at *paths*, as a JSON-able dict.

    The work is cut into *processes* shares: the first here, each connection wrapped
    in *limit*, the others in child processes, whose queries stop after *seconds* (the
    time the job has left). Not *here*: every share in a child process (a job, so that
    the worker process keeps its memory). *progress* is called here with ``(done,
    total, stage)`` as databases are read and before the final counting; an exception
    it raises (a cancel, a time limit) stops the work. Warnings name a database by its
    path below *root* (default: the directory the databases share).
    """
    began = time.perf_counter()
    paths = [Path(p) for p in paths]
    report = progress or (lambda done, total, stage: None)
    total = len(paths)

    def databases_read(done: float) -> None:
        report(int(done), total, f"databases {int(done)} of {total}")
        if done >= total:
            report(total, total, "aggregating")

    databases_read(0)
    if total and (not here or processes > 1 and total > 1):
        shares = worker.run_shares(paths, query, processes, databases_read, limit=limit,
                                   busy_timeout=busy_timeout, seconds=seconds, here=here)
    else:
        shares = [read_share(paths, query, limit=limit, progress=databases_read,
                             busy_timeout=busy_timeout)]
    return assemble(query, paths, shares, time.perf_counter() - began, root=root)


def assemble(query: ReportQuery, paths: list[Path], shares: list[dict[str, Any]],
             seconds: float, root: Path | None = None) -> dict[str, Any]:
    """The report from the shares' results (:func:`read_share`)."""
    buckets = query.buckets()
    scans, visitors = [0] * len(buckets), [0] * len(buckets)
    dims = {name: Counter() for name in DIMENSIONS}
    warnings: dict[int, str] = {}
    skipped: set[int] = set()
    for share in shares:
        for i, count in share["scans"]:
            scans[i] += count
        for i, count in share["visitors"]:
            visitors[i] = count
        for dimension, key, count in share["dims"]:
            dims[DIMENSIONS[dimension]][key] += count
        warnings.update((int(j), text) for j, text in share["warnings"])
        skipped.update(share["skipped"])
    series = [{"bucket": b.start.isoformat(), "label": b.label, "start": _iso(b.start_ts),
               "scans": scans[i], "visitors": visitors[i]} for i, b in enumerate(buckets)]
    names = _names(paths, root) if warnings else []
    return {
        "params": query.to_dict(),
        "series": series,
        "totals": {"scans": sum(scans)},
        "top": {name: _top(name, counter) for name, counter in dims.items()},
        "databases": {"found": len(paths), "read": len(paths) - len(skipped),
                      "skipped": len(skipped)},
        "warnings": sorted(f"{names[j]}: {text}" for j, text in warnings.items()),
        "visitors": "exact: distinct visitor hashes per bucket across all databases",
        "seconds": round(seconds, 3),
    }


def _location(location: str, data_dir: Path) -> Path:
    return Path(data_dir) / (location.strip() or "analytics")


def _names(paths: list[Path], root: Path | None) -> list[str]:
    """Each database's path below *root*, never the server's absolute path."""
    absolute = [p.absolute() for p in paths]
    if root is None:
        root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = []
    for path in absolute:
        try:
            names.append(path.relative_to(Path(root).absolute()).as_posix())
        except ValueError:  # outside the root (a symlinked glob match): its name only
            names.append(path.name)
    return names


def _top(name: str, counter: Counter) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda item: (-item[1], str(item[0])))[:TOP_N]
    return [{_DIM_KEYS[name]: key, "scans": count} for key, count in ranked]


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
