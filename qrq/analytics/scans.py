"""The scan-event databases: their schema, and realistic demo data to fill them.

QRCards keeps scan events in many SQLite files (one per collector shard). Each holds
one table, ``scans``, one row per scan::

    id            integer primary key
    scanned_at    integer   Unix seconds, UTC
    template_id   integer   the card template whose code was scanned
    domain        text      the domain the code points to, e.g. menu.qrcards.example
    country       text      ISO 3166-1 alpha-2 code of the scanner ("ZZ": unknown)
    device        text      ios, android, desktop or other
    visitor_hash  blob      8 bytes (a CHECK constraint says so): 64 bits of a keyed
                            hash of the visitor (IP and user agent), so visitors are
                            counted without being stored; the same visitor has the
                            same hash in every database. (Shards written before
                            2026-11-23 hold 16 lowercase hex digits as text: still
                            read, a little more slowly.)

The indexes are the ones :mod:`qrq.analytics` needs, each covering its query so no
table row is read: time ranges (``scans_time``), time ranges within a domain or a
template (``scans_domain_time``, ``scans_template_time``), and the top-N counts of a
range (``scans_dims``).

:func:`write_demo_database` fills one file with a year of plausible traffic: a few
templates and domains get most scans; lunch and dinner peaks in the shard's local
time; busier weekends; growth over the year; visitors who come back, scan twice in a
row, and sometimes show up in other shards.
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import multiprocessing.queues
import os
import queue
import random
import sqlite3
import time
import zoneinfo
from collections.abc import Callable, Sequence
from pathlib import Path

# Every visitor hash is 8 bytes: what lets :mod:`qrq.analytics` take a bucket's
# glued hashes as they come (lower case, single spaces, as it compares it).
VISITOR_CHECK = "check (typeof(visitor_hash) = 'blob' and length(visitor_hash) = 8)"

SCHEMA = (
    "create table if not exists scans ("
    " id integer primary key,"
    " scanned_at integer not null,"
    " template_id integer not null,"
    " domain text not null,"
    " country text not null,"
    " device text not null,"
    f" visitor_hash blob not null {VISITOR_CHECK})",
    "create index if not exists scans_time on scans (scanned_at, visitor_hash)",
    "create index if not exists scans_domain_time on scans (domain, scanned_at, visitor_hash)",
    "create index if not exists scans_template_time on scans "
    "(template_id, scanned_at, visitor_hash)",
    "create index if not exists scans_dims on scans "
    "(template_id, domain, country, device, scanned_at)",
)

DEVICES = (("ios", 46), ("android", 40), ("desktop", 10), ("other", 4))
# (country, time zone of the shards based there, weight among foreign visitors)
REGIONS = (
    ("US", "America/New_York", 25), ("DE", "Europe/Berlin", 14), ("GB", "Europe/London", 12),
    ("FR", "Europe/Paris", 10), ("ES", "Europe/Madrid", 7), ("IT", "Europe/Rome", 6),
    ("NL", "Europe/Amsterdam", 5), ("BR", "America/Sao_Paulo", 5), ("JP", "Asia/Tokyo", 5),
    ("IN", "Asia/Kolkata", 4), ("AU", "Australia/Sydney", 4), ("CA", "America/Toronto", 3),
)
DOMAINS = (
    ("menu.qrcards.example", 30), ("cards.qrcards.example", 16), ("shop.qrcards.example", 12),
    ("events.qrcards.example", 9), ("bistro-lumiere.example", 6), ("hafenbar.example", 5),
    ("tapas-norte.example", 4), ("ramen-kaze.example", 4), ("museum-nord.example", 3),
    ("city-tours.example", 3), ("bookfair.example", 2), ("fitlab.example", 2),
    ("green-market.example", 2), ("jazzclub.example", 1), ("harbour-ferry.example", 1),
)
TEMPLATES = 200
# Local-time rhythm: quiet nights, a lunch peak and a larger dinner peak.
HOUR_WEIGHTS = (2, 1, 1, 0.5, 0.5, 1, 2, 4, 6, 6, 6, 9, 15, 13, 7, 5, 5, 8, 13, 16, 12, 7, 4, 3)
# Monday .. Sunday.
WEEKDAY_WEIGHTS = (0.8, 0.85, 0.9, 0.95, 1.25, 1.5, 1.3)
# Scans in one visit: most scan once, many twice (the page did not load), some more.
SCANS_PER_VISIT = ((1, 62), (2, 24), (3, 9), (4, 5))
SHARED_VISITORS = 0.15  # share of visits by visitors who also appear in other shards


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the ``scans`` table and its indexes (idempotent)."""
    for statement in SCHEMA:
        conn.execute(statement)


def template_domains(seed: int = 0) -> dict[int, str]:
    """Which domain each demo template points to (popular domains get more templates)."""
    rnd = random.Random(f"templates:{seed}")
    names, weights = zip(*DOMAINS, strict=True)
    return {t: rnd.choices(names, weights)[0] for t in range(1, TEMPLATES + 1)}


def _visitor_pool(rnd: random.Random, size: int, countries: Sequence[str],
                  country_weights: Sequence[float]) -> list[tuple[bytes, str, str]]:
    """Visitors as (hash, country, device); a visitor keeps one country and device."""
    hashes = [rnd.getrandbits(64).to_bytes(8, "big") for _ in range(size)]
    homes = rnd.choices(countries, country_weights, k=size)
    devices = rnd.choices([d for d, _ in DEVICES], [w for _, w in DEVICES], k=size)
    return list(zip(hashes, homes, devices, strict=True))


def demo_rows(index: int, scans: int, days: int = 365, seed: int = 0,
              end: float | None = None) -> list[tuple]:
    """The rows of demo shard number *index*: ``scans`` rows over the *days* before *end*.

    Rows are ``(scanned_at, template_id, domain, country, device, visitor_hash)`` in
    time order, as an append-only event log writes them.
    """
    rnd = random.Random(f"shard:{seed}:{index}")
    end = time.time() if end is None else end
    home, tz_name, _ = REGIONS[index % len(REGIONS)]
    tz = zoneinfo.ZoneInfo(tz_name)
    countries = [c for c, _, _ in REGIONS] + ["ZZ"]
    foreign = [w for _, _, w in REGIONS] + [2]
    local = [100 * 4 if c == home else w for c, w in zip(countries, foreign, strict=True)]

    mean_size = sum(n * w for n, w in SCANS_PER_VISIT) / sum(w for _, w in SCANS_PER_VISIT)
    visits = max(1, int(scans / mean_size * 1.05) + 10)  # a margin, cut to size below
    own = _visitor_pool(rnd, max(1, visits // 3), countries, local)
    # The shared pool is the same in every shard: those visitors cross shards.
    shared = _visitor_pool(random.Random(f"shared:{seed}"), max(1, visits // 10),
                           countries, foreign)

    # Day weights: weekday rhythm, 60% growth over the period, some day-to-day noise.
    last = datetime.datetime.fromtimestamp(end, tz).date()
    dates = [last - datetime.timedelta(days=days - 1 - d) for d in range(days)]
    day_weights = [WEEKDAY_WEIGHTS[day.weekday()] * (1 + 0.6 * d / days)
                   * rnd.uniform(0.8, 1.2) for d, day in enumerate(dates)]
    # Local midnight of each day in UTC, from the zone's offset at noon (DST-aware).
    midnights = [datetime.datetime(day.year, day.month, day.day, 12, tzinfo=tz).timestamp()
                 - 12 * 3600 for day in dates]

    names = list(range(1, TEMPLATES + 1))
    popularity = [1 / rank ** 1.1 for rank in range(1, TEMPLATES + 1)]
    rnd.shuffle(popularity)  # each shard has its own favourites
    domains = template_domains(seed)
    sizes = [n for n, _ in SCANS_PER_VISIT]

    visit_days = rnd.choices(range(days), day_weights, k=visits)
    visit_hours = rnd.choices(range(24), HOUR_WEIGHTS, k=visits)
    visit_templates = rnd.choices(names, popularity, k=visits)
    visit_sizes = rnd.choices(sizes, [w for _, w in SCANS_PER_VISIT], k=visits)
    random_ = rnd.random
    rows = []
    for day, hour, template, size in zip(visit_days, visit_hours, visit_templates,
                                         visit_sizes, strict=True):
        pool = shared if random_() < SHARED_VISITORS else own
        # Regulars come back: the low end of each pool is picked far more often.
        visitor, country, device = pool[int(len(pool) * random_() ** 2)]
        at = int(midnights[day] + hour * 3600 + random_() * 3600)
        if at > end:
            at -= 7 * 86400  # same weekday and hour, a week earlier
        domain = domains[template]
        for _ in range(size):
            rows.append((at, template, domain, country, device, visitor))
            at += 5 + int(random_() * 120)
    del rows[scans:]  # visits are in random order, so this cuts no period short
    rows.sort()
    return rows


# The share of a demo database's writing time that is done after each step (measured
# on 500,000 scans: making the rows 37 %, inserting them 25 %, the indexes 32 %).
_ROWS_MADE, _ROWS_WRITTEN, _INDEXED = 0.35, 0.6, 0.95
_INSERT_CHUNK = 50_000


def write_demo_database(path: Path, index: int, scans: int, days: int = 365, seed: int = 0,
                        end: float | None = None,
                        progress: Callable[[float], None] | None = None) -> Path:
    """Write demo shard *index* to *path* (replacing it atomically); return *path*.

    *progress* (if given) gets the fraction of the work done, step by step, up to 1.
    """
    report = progress or (lambda fraction: None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    rows = demo_rows(index, scans, days, seed, end)
    report(_ROWS_MADE)
    conn = sqlite3.connect(tmp)
    try:
        # A throwaway file until the rename: no journal, no fsync per statement.
        conn.execute("pragma journal_mode = off")
        conn.execute("pragma synchronous = off")
        conn.execute(SCHEMA[0])
        with conn:
            for start in range(0, len(rows), _INSERT_CHUNK):
                conn.executemany("insert into scans (scanned_at, template_id, domain, "
                                 "country, device, visitor_hash) values (?, ?, ?, ?, ?, ?)",
                                 rows[start:start + _INSERT_CHUNK])
                written = min(1.0, (start + _INSERT_CHUNK) / len(rows))
                report(_ROWS_MADE + (_ROWS_WRITTEN - _ROWS_MADE) * written)
        del rows
        indexes = SCHEMA[1:]
        for k, statement in enumerate(indexes, 1):
            conn.execute(statement)
            report(_ROWS_WRITTEN + (_INDEXED - _ROWS_WRITTEN) * k / len(indexes))
        conn.execute("analyze")
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, path)
    report(1.0)
    return path


# The progress queue of a pool process (set by the pool's initializer).
_updates: multiprocessing.queues.Queue | None = None


def _report_to(updates: multiprocessing.queues.Queue) -> None:
    global _updates
    _updates = updates


def _write_one(args: tuple) -> Path:
    index = args[1]
    return write_demo_database(*args, progress=lambda fraction: _updates.put((index, fraction)))


def write_demo_databases(directory: Path, dbs: int, scans: int, days: int = 365,
                         seed: int = 0, processes: int = 1, end: float | None = None,
                         progress: Callable[[float], None] | None = None) -> list[Path]:
    """Write *dbs* demo shards ``scans-000.db`` ... into *directory*, using *processes*
    processes; *progress* (if given) is called with how many databases are written so
    far, as a fraction (each database reports its steps), whenever that grows."""
    end = time.time() if end is None else end
    report = progress or (lambda done: None)
    work = [(Path(directory) / f"scans-{i:03d}.db", i, scans, days, seed, end)
            for i in range(dbs)]
    if processes <= 1 or dbs <= 1:
        return [write_demo_database(*args, progress=lambda fraction, i=i: report(i + fraction))
                for i, args in enumerate(work)]
    context = multiprocessing.get_context("spawn")
    updates = context.Queue()
    fractions, done, reported = [0.0] * dbs, [], 0.0
    with context.Pool(processes, initializer=_report_to, initargs=(updates,)) as pool:
        results = pool.imap(_write_one, work)
        while len(done) < dbs:
            try:
                done.append(results.next(timeout=0.1))
                fractions[len(done) - 1] = 1.0
            except multiprocessing.TimeoutError:
                pass
            with contextlib.suppress(queue.Empty):
                while True:
                    i, fraction = updates.get_nowait()
                    fractions[i] = max(fractions[i], fraction)
            if sum(fractions) > reported:
                reported = sum(fractions)
                report(reported)
    updates.close()
    return done
