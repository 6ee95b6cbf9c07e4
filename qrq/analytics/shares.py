"""A share of a report's work: some buckets of every database, and some top-N counts.

Share k of n takes every n-th run of consecutive buckets (:func:`share_buckets`), so
its visitor counts are final on their own and a share sends back a few kB. The top-N
counts of each database go to one share: a fixed one, or whichever asks first
(*take*, the work stealing of :mod:`qrq.analytics.worker`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrq.analytics import shard
from qrq.analytics.query import ReportQuery, plan_buckets


def share_buckets(share: int, shares: int, count: int) -> list[int]:
    """The buckets of share *share* of *shares*: runs of consecutive buckets, every
    *shares*-th run (4 runs per share), so each share reads its stretches of an index
    without touching the pages of the others' (every other day would make both read
    almost every page); growth over the range evens out, and the top-N work stealing
    absorbs what does not."""
    size = -(-count // (shares * 4)) if shares > 1 else max(count, 1)
    return [i for i in range(count) if (i // size) % shares == share]


def read_share(paths: list[Path], query: ReportQuery, share: int = 0, shares: int = 1, *,
               limit: shard.Limit | None = None, progress: Callable[[int], None] | None = None,
               busy_timeout: float = 5.0,
               take: Callable[[], int | None] | None = None) -> dict[str, Any]:
    """Read share *share* of *shares* (all of it by default) from every database and
    count its buckets' distinct visitors; a JSON-able dict for
    :func:`qrq.analytics.assemble`, which names databases by their index in *paths*.

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
    visitor_hashes: dict[int, list] = {i: [] for i in mine}  # numpy arrays
    dims: Counter = Counter()  # (dimension, key) -> scans, over this share's databases
    warnings: dict[int, str] = {}
    skipped: set[int] = set()
    done = 0

    def add(j: int, part: shard.DatabasePart) -> None:
        nonlocal done
        if part.warning:
            warnings[j] = part.warning
        if part.skipped:
            skipped.add(j)
        scans.update(part.scans)
        for i, hashes in part.visitors.items():
            visitor_hashes[i].append(hashes)
        for dimension, key, count in part.dims:
            dims[dimension, key] += count
        done += 1
        if progress is not None:
            progress(done)

    for j, path in enumerate(paths):
        add(j, shard.read_database(path, query, bounds, buckets=mine,
                                   dims=take is None and j % shares == share, limit=limit,
                                   busy_timeout=busy_timeout))
    while take is not None and (j := take()) is not None:
        add(j, shard.read_database(paths[j], query, bounds, buckets=(), dims=True,
                                   limit=limit, busy_timeout=busy_timeout))
    visitors = {}
    for i in mine:
        visitors[i] = count_distinct(visitor_hashes.pop(i))
    return {"scans": sorted(scans.items()), "visitors": sorted(visitors.items()),
            "dims": [(d, key, n) for (d, key), n in dims.items()],
            "warnings": sorted(warnings.items()), "skipped": sorted(skipped)}


def count_distinct(arrays: list) -> int:
    """The number of distinct hashes in *arrays* (numpy arrays of uint64) together."""
    import numpy

    if not arrays:
        return 0
    hashes = arrays[0] if len(arrays) == 1 else numpy.concatenate(arrays)
    return _distinct(hashes) if len(hashes) else 0


def _distinct(hashes: Any) -> int:
    """The number of distinct values in *hashes*, a numpy array of uint64.

    The hashes are uniform 64-bit values, so a table of 2-4 slots per hash, indexed by
    some of their bits, sorts most of them out without a sort (a third of its time):
    each slot keeps one of the hashes written to it. A hash that finds itself in its
    slot is a copy of that slot's keeper, so the touched slots count the keepers'
    distinct values; the others (~5%) differ from every keeper and go round again on
    the next bits. What is left at the end, or if fewer than half find themselves
    (values that are not random), is sorted.
    """
    import numpy

    distinct, shift = 0, 0
    while len(hashes) >= 256:
        bits = min(len(hashes).bit_length() + 1, 22)  # the table: at most 32 MB
        if shift + bits > 64:
            break
        # The same bits read as int64, numpy's index type: no conversion pass (the sign
        # bits an arithmetic shift brings in lie above the mask).
        signed = hashes.view(numpy.int64)
        slots = (signed >> shift if shift else signed) & ((1 << bits) - 1)
        table = numpy.zeros(1 << bits, numpy.uint64)
        table[slots] = hashes
        others = hashes[table[slots] != hashes]
        # A touched slot holds a hash: count the non-zero ones, plus slot 0 if the hash
        # 0 (whose slot is always 0) kept it.
        distinct += int(numpy.count_nonzero(table))
        distinct += int(table[0] == 0 and bool((hashes == 0).any()))
        if 2 * len(others) > len(hashes):
            hashes = others
            break
        hashes, shift = others, shift + bits
    if not len(hashes):
        return distinct
    hashes = numpy.sort(hashes)
    return distinct + int(numpy.count_nonzero(hashes[1:] != hashes[:-1])) + 1
