"""The aggregation over real scan databases under tmp_path, checked against a plain
Python reference that buckets each row with zoneinfo."""

import contextlib
import datetime
import os
import random
import sqlite3
import threading
import time
import zoneinfo
from collections import Counter, defaultdict

import pytest

from qrq import analytics
from qrq.analytics import shard
from qrq.analytics import worker as analytics_worker
from qrq.analytics.query import parse_query
from qrq.analytics.scans import SCHEMA, create_schema, template_domains, write_demo_database
from qrq.analytics.shard import hash_array
from qrq.analytics.shares import count_distinct
from qrq.sqlite_deadline import interrupt_when

END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
COLUMNS = "scanned_at, template_id, domain, country, device, visitor_hash"
# The schema before visitor hashes became 8-byte blobs: 16 hex digits as text.
LEGACY_TABLE = ("create table scans (id integer primary key, scanned_at integer not null, "
                "template_id integer not null, domain text not null, country text not null, "
                "device text not null, visitor_hash text not null)")


def ts(text):
    """Unix seconds of an ISO UTC time like 2026-03-28T23:30."""
    return int(datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp())


@pytest.fixture
def make_db(tmp_path):
    """Write a scan database from rows (scanned_at, template_id, domain, country, device,
    visitor_hash as 16 hex digits, stored as its 8 bytes); ``indexes=False`` leaves out
    the indexes; ``legacy=True`` writes the old schema (hashes as text, as given)."""
    def make(name, rows, indexes=True, legacy=False):
        path = tmp_path / "scans" / name
        path.parent.mkdir(exist_ok=True)
        with sqlite3.connect(path) as conn:
            conn.execute(LEGACY_TABLE if legacy else SCHEMA[0])
            if indexes:
                create_schema(conn)
            if not legacy:
                rows = [(*row[:5], bytes.fromhex(row[5])) for row in rows]
            conn.executemany(f"insert into scans ({COLUMNS}) values (?, ?, ?, ?, ?, ?)", rows)
        conn.close()
        return path
    return make


@pytest.fixture(scope="module")
def demo_dbs(tmp_path_factory):
    """Six demo shards of 3,000 scans over 90 days (shared visitors across shards)."""
    directory = tmp_path_factory.mktemp("demo")
    return [write_demo_database(directory / f"scans-{i}.db", i, 3000, days=90, end=END)
            for i in range(6)]


def reference(paths, query):
    """What the report must say, computed row by row in Python."""
    tz = zoneinfo.ZoneInfo(query.tz)
    labels = {b.start: b.label for b in query.buckets()}
    scans, visitors = Counter(), defaultdict(set)
    tops = {name: Counter() for name in analytics.DIMENSIONS}
    for path in paths:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(f"select {COLUMNS} from scans").fetchall()
        conn.close()
        for at, template_id, domain, country, device, visitor in rows:
            day = datetime.datetime.fromtimestamp(at, tz).date()
            if not query.start <= day <= query.end:
                continue
            if query.domain is not None and domain != query.domain:
                continue
            if query.template_id is not None and template_id != query.template_id:
                continue
            if query.period == "weekly":
                day -= datetime.timedelta(days=day.weekday())
            elif query.period == "monthly":
                day = day.replace(day=1)
            scans[day] += 1
            visitors[day].add(analytics.visitor_key(visitor))
            for name, value in zip(analytics.DIMENSIONS, (template_id, domain, country, device),
                                   strict=True):
                tops[name][value] += 1
    series = [(labels[start], scans[start], len(visitors[start])) for start in labels]
    return series, tops


def check(result, paths, query):
    series, tops = reference(paths, query)
    assert [(p["label"], p["scans"], p["visitors"]) for p in result["series"]] == series
    for name, counter in tops.items():
        got = {row[analytics._DIM_KEYS[name]]: row["scans"] for row in result["top"][name]}
        assert len(got) == min(analytics.TOP_N, len(counter))
        assert all(counter[key] == count for key, count in got.items())
        ranked = sorted(counter.values(), reverse=True)[:analytics.TOP_N]
        assert sorted(got.values(), reverse=True) == ranked
    assert result["totals"]["scans"] == sum(s for _, s, _ in series)


@pytest.mark.parametrize("args", [
    {"period": "daily", "from": "2026-09-01", "to": "2026-11-22"},
    {"period": "daily", "from": "2026-10-20", "to": "2026-10-30", "tz": "Europe/Berlin"},
    {"period": "weekly", "from": "2026-08-01", "to": "2026-11-22", "tz": "America/New_York"},
    {"period": "monthly", "from": "2026-01-01", "to": "2026-12-31", "tz": "Asia/Kathmandu"},
    {"period": "daily", "from": "2026-11-01", "to": "2026-11-22",
     "domain": "menu.qrcards.example"},
    {"period": "weekly", "from": "2026-09-01", "to": "2026-11-22", "template_id": "4"},
    {"period": "weekly", "from": "2026-09-01", "to": "2026-11-22", "template_id": "4",
     "domain": template_domains()[4]},
])
def test_matches_a_row_by_row_reference(demo_dbs, args):
    query = parse_query(args)
    result = analytics.time_series(demo_dbs, query)
    check(result, demo_dbs, query)
    assert result["warnings"] == [] and result["databases"] == {
        "found": 6, "read": 6, "skipped": 0}
    assert result["params"] == query.to_dict()
    assert sum(p["scans"] for p in result["series"]) > 0


@pytest.mark.parametrize("processes, here", [(2, True), (3, True), (1, False), (2, False)])
def test_child_processes_give_the_same_report(demo_dbs, processes, here):
    """Share 0 read here and the others in children, or every share in a child (a job)."""
    query = parse_query({"period": "daily", "from": "2026-10-01", "to": "2026-11-22",
                         "tz": "Europe/Berlin"})
    seen = []
    alone = analytics.time_series(demo_dbs, query)
    there = analytics.time_series(demo_dbs, query, processes=processes, here=here,
                                  progress=lambda *args: seen.append(args))
    assert {**alone, "seconds": 0} == {**there, "seconds": 0}
    assert seen[0] == (0, 6, "databases 0 of 6") and seen[-1] == (6, 6, "aggregating")
    check(there, demo_dbs, query)


def test_child_processes_stop_their_queries_at_the_time_limit(demo_dbs, tmp_path):
    endless = tmp_path / "endless.db"
    with sqlite3.connect(endless) as conn:
        conn.execute("create view scans as with recursive r(n) as (select 1 union all "
                     "select n + 1 from r) select n as id, n as scanned_at, 1 as "
                     "template_id, 'x' as domain, 'x' as country, 'x' as device, "
                     "printf('%016x', n) as visitor_hash from r")
    conn.close()
    for here in (True, False):
        with pytest.raises(sqlite3.OperationalError, match="interrupt"):
            analytics.time_series([*demo_dbs, endless], parse_query({}), processes=2,
                                  seconds=0.5, here=here)


def test_a_visitor_in_several_databases_counts_once_per_bucket(make_db):
    same, other = "00000000000000aa", "00000000000000bb"
    a = make_db("a.db", [(ts("2026-11-20T10:00"), 1, "x.example", "DE", "ios", same),
                         (ts("2026-11-20T11:00"), 1, "x.example", "DE", "ios", same),
                         (ts("2026-11-21T09:00"), 2, "y.example", "FR", "android", same)])
    b = make_db("b.db", [(ts("2026-11-20T18:00"), 2, "y.example", "DE", "ios", same.upper()),
                         (ts("2026-11-20T19:00"), 2, "y.example", "US", "desktop", other)])
    query = parse_query({"from": "2026-11-20", "to": "2026-11-21"})
    result = analytics.time_series([a, b], query)
    assert [(p["scans"], p["visitors"]) for p in result["series"]] == [(4, 2), (1, 1)]
    assert result["top"]["templates"] == [{"template_id": 2, "scans": 3},
                                          {"template_id": 1, "scans": 2}]
    assert result["top"]["countries"][0] == {"country": "DE", "scans": 3}


def test_hashes_holding_the_separator_byte_count_right(make_db):
    """A bucket's hashes come glued with a comma between (group_concat); hashes made of
    commas, or that differ only around one, still count exactly, within a database and
    across two."""
    comma = b",".hex()  # 2c
    hashes = [comma * 8, comma * 7 + "00", "00" + comma * 7, comma * 4 + "00" * 4,
              "00" * 4 + comma * 4]
    at = ts("2026-11-20T10:00")
    a = make_db("a.db", [(at + i, 1, "x.example", "DE", "ios", h)
                         for i, h in enumerate(hashes + hashes[:2])])
    b = make_db("b.db", [(at + 60 + i, 1, "x.example", "DE", "ios", h)
                         for i, h in enumerate(hashes[1:] + [comma * 3 + "00" * 5])])
    query = parse_query({"from": "2026-11-20", "to": "2026-11-20"})
    for paths, scans, visitors in (([a], 7, 5), ([b], 5, 5), ([a, b], 12, 6)):
        result = analytics.time_series(paths, query)
        assert (result["series"][0]["scans"], result["series"][0]["visitors"]) == (
            scans, visitors)


@pytest.mark.parametrize("values", [
    pytest.param([0], id="the hash 0 alone"),
    pytest.param([1 << 40, 0, 0] * 200, id="the hash 0 keeps its slot"),
    pytest.param([0, 0, 1 << 40] * 200, id="the hash 0 loses its slot"),
    pytest.param([i % 977 * 0x9E3779B97F4A7C15 % 2**64 for i in range(5000)],
                 id="random, each ~5 times"),
    pytest.param(list(range(300)) * 2 + [2**64 - 1], id="consecutive"),
    pytest.param([i << 40 for i in range(3000)], id="low bits all zero"),
    pytest.param([(i % 7) << 58 | 12345 for i in range(20000)], id="differ in the top bits"),
    pytest.param([7] * 1000, id="one hash"),
    pytest.param([*map(random.Random(18).getrandbits, [64] * 20000)] * 2,
                 id="random, twice each: the losers go round again on the next bits"),
])
def test_distinct_count_is_exact_for_any_hashes(values):
    """The count slots hashes by their bits before it sorts (what is left): values that
    are not random, the hash 0 and repeats still count exactly."""
    glued = b",".join(v.to_bytes(8, "little") for v in values)
    assert count_distinct([hash_array(glued)]) == len(set(values))


def test_buckets_follow_the_time_zone_across_dst(make_db):
    rows = [(ts(at), 1, "x.example", "DE", "ios", f"{i:016x}") for i, at in enumerate([
        "2026-03-28T22:30",  # 23:30 in Berlin, 28 March
        "2026-03-28T23:30",  # 00:30 on the 29th (still UTC+1)
        "2026-03-29T21:30",  # 23:30 on the 29th (now UTC+2)
        "2026-03-29T22:30",  # 00:30 on the 30th
    ])]
    path = make_db("dst.db", rows)
    berlin = analytics.time_series([path], parse_query(
        {"from": "2026-03-28", "to": "2026-03-30", "tz": "Europe/Berlin"}))
    assert [p["scans"] for p in berlin["series"]] == [1, 2, 1]
    assert berlin["series"][1]["start"] == "2026-03-28T23:00:00Z"
    utc = analytics.time_series([path], parse_query({"from": "2026-03-28", "to": "2026-03-30"}))
    assert [p["scans"] for p in utc["series"]] == [2, 2, 0]


def test_missing_corrupt_locked_and_foreign_databases_are_skipped_with_a_warning(
        make_db, tmp_path):
    good = make_db("good.db", [(ts("2026-11-20T10:00"), 1, "x.example", "DE", "ios",
                                "00000000000000aa")])
    corrupt = tmp_path / "scans" / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "scans" / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("create table visits (id integer primary key)")
    conn.close()
    locked = make_db("locked.db", [(ts("2026-11-20T11:00"), 1, "x.example", "DE", "ios",
                                    "00000000000000bb")])
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("begin exclusive")  # a writer holding the lock (rollback journal)
    try:
        result = analytics.time_series(
            [good, tmp_path / "scans" / "missing.db", corrupt, foreign, locked],
            parse_query({"from": "2026-11-20", "to": "2026-11-20"}), busy_timeout=0.05)
    finally:
        holder.rollback()
        holder.close()
    assert result["series"][0]["scans"] == 1
    assert result["databases"] == {"found": 5, "read": 1, "skipped": 4}
    warnings = " | ".join(result["warnings"])
    for name, reason in (("missing.db", "unable to open"), ("corrupt.db", "not a database"),
                         ("foreign.db", "no such table"), ("locked.db", "locked")):
        assert f"{name}: skipped: " in warnings and reason in warnings, warnings


def test_databases_are_opened_read_only(make_db):
    path = make_db("a.db", [(ts("2026-11-20T10:00"), 1, "x.example", "DE", "ios",
                             "00000000000000aa")])
    before = path.read_bytes()
    seen = []

    def spy(conn):
        seen.append(conn)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("insert into scans (scanned_at, template_id, domain, country, "
                         "device, visitor_hash) values (1, 1, 'x', 'x', 'x', 'x')")
        return interrupt_when(conn, lambda: False)

    analytics.time_series([path], parse_query({}), limit=spy)
    assert len(seen) == 1 and path.read_bytes() == before


def test_odd_visitor_hashes_and_missing_indexes_still_count_right(make_db):
    rows = [(ts("2026-11-20T10:00"), 1, "x.example", "DE", "ios", "not-hex-at-all!!"),
            (ts("2026-11-20T10:05"), 1, "x.example", "DE", "ios", "short"),
            (ts("2026-11-20T10:06"), 1, "x.example", "DE", "ios", "short"),
            (ts("2026-11-20T10:07"), 1, "x.example", "DE", "ios", "0123456789ABCDEF"),
            (ts("2026-11-20T10:08"), 1, "x.example", "DE", "ios", "0123456789abcdef")]
    path = make_db("odd.db", rows, indexes=False, legacy=True)
    query = parse_query({"from": "2026-11-20", "to": "2026-11-20"})
    result = analytics.time_series([path], query)
    assert (result["series"][0]["scans"], result["series"][0]["visitors"]) == (5, 3)
    assert result["databases"]["read"] == 1
    assert "odd.db: missing index scans_time" in result["warnings"][0]
    check(result, [path], query)


def test_a_time_limit_interrupts_a_running_query(demo_dbs):
    calls = []

    def limit(conn):
        calls.append(conn)
        # the deadline passes while the database is read
        return interrupt_when(conn, lambda: True, every=1000)

    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        analytics.time_series(demo_dbs, parse_query({"from": "2026-09-01"}), limit=limit)
    assert len(calls) == 1  # the rest were never opened


def test_progress_reports_each_database_then_aggregating(demo_dbs):
    seen = []
    analytics.time_series(demo_dbs, parse_query({}),
                          progress=lambda done, total, stage: seen.append((done, total, stage)))
    assert seen[0] == (0, 6, "databases 0 of 6")
    assert [s[0] for s in seen[1:-1]] == [1, 2, 3, 4, 5, 6]
    assert seen[-2] == (6, 6, "databases 6 of 6") and seen[-1][2] == "aggregating"


def test_an_exception_in_progress_stops_the_remaining_reads(demo_dbs):
    opened = []

    def limit(conn):
        opened.append(conn)
        return interrupt_when(conn, lambda: False)

    def progress(done, total, stage):
        if done == 1:
            raise KeyboardInterrupt("canceled")

    with pytest.raises(KeyboardInterrupt):
        analytics.time_series(demo_dbs, parse_query({}), limit=limit, progress=progress)
    assert len(opened) == 1  # the other five were never opened


def test_find_databases_takes_a_directory_a_glob_or_a_file(tmp_path, make_db):
    a = make_db("a.db", [])
    b = make_db("b.db", [])
    (tmp_path / "scans" / "notes.txt").write_text("not a database")
    assert analytics.find_databases(str(tmp_path / "scans"), tmp_path) == [a, b]
    assert analytics.find_databases("scans/*.db", tmp_path) == [a, b]
    assert analytics.find_databases("scans/b.db", tmp_path) == [b]
    assert analytics.find_databases("", tmp_path) == []  # <data>/analytics does not exist
    assert analytics.find_databases("nowhere", tmp_path) == []


def test_shards_with_the_old_text_hashes_give_the_same_report(demo_dbs, tmp_path):
    """Shards written before hashes became 8-byte blobs (16 hex digits as text) are read
    through bytes.fromhex, and count the same visitors."""
    legacy = []
    for path in demo_dbs:
        old = tmp_path / "legacy" / path.name
        old.parent.mkdir(exist_ok=True)
        with sqlite3.connect(old) as conn:
            conn.execute(LEGACY_TABLE)
            conn.execute("attach ? as new", (str(path),))
            conn.execute(f"insert into scans ({COLUMNS}) select scanned_at, template_id, "
                         "domain, country, device, lower(hex(visitor_hash)) from new.scans")
            conn.commit()
            conn.execute("detach new")
            create_schema(conn)  # the indexes (the table exists already)
        conn.close()
        legacy.append(old)
    query = parse_query({"period": "weekly", "from": "2026-09-01", "to": "2026-11-22",
                         "tz": "Europe/Berlin"})
    new = analytics.time_series(demo_dbs, query)
    old = analytics.time_series(legacy, query, processes=2)
    assert {**old, "seconds": 0} == {**new, "seconds": 0}
    check(old, legacy, query)


def test_the_indexes_and_the_check_are_found_whatever_the_table_name_case(tmp_path, demo_dbs):
    """One read of sqlite_master finds the indexes and the CHECK of a table created as
    ``SCANS`` (SQLite's names ignore case): no missing-index warning, the fast paths for
    the hashes (glued, and the index's pages), and the same report as the original database."""
    path = tmp_path / "upper.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"attach '{demo_dbs[0]}' as demo")
        for statement in SCHEMA:
            conn.execute(statement.replace(" on scans ", " on SCANS ")
                         .replace("exists scans (", "exists SCANS ("))
        conn.execute("insert into SCANS select * from demo.scans")
    conn.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        indexes, packed, time_root = shard._schema(conn)
    assert (indexes, packed) == (set(shard.INDEXES), True) and time_root > 1
    query = parse_query({"from": "2026-09-01", "to": "2026-11-22"})
    result = analytics.time_series([path], query)
    assert result["warnings"] == []
    original = analytics.time_series([demo_dbs[0]], query)
    assert (result["series"], result["top"]) == (original["series"], original["top"])
    check(result, [path], query)


def test_the_schema_accepts_only_8_byte_visitor_hashes(make_db):
    path = make_db("a.db", [])
    with sqlite3.connect(path) as conn:
        conn.execute(f"insert into scans ({COLUMNS}) values (1, 1, 'x', 'x', 'x', ?)",
                     (b"12345678",))
        for bad in ("0123456789abcdef", b"1234567", b"123456789", 12345678):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                conn.execute(f"insert into scans ({COLUMNS}) values (1, 1, 'x', 'x', 'x', ?)",
                             (bad,))
    conn.close()


def test_blob_hashes_without_the_check_take_the_exact_slow_path(tmp_path):
    """A table of its own (blobs of any length, no CHECK) is still counted exactly: a
    bucket's glued bytes could not be split safely, so each value is read."""
    path = tmp_path / "own.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table scans (id integer primary key, scanned_at integer, "
                     "template_id integer, domain text, country text, device text, "
                     "visitor_hash blob)")
        at = ts("2026-11-20T10:00")
        # 4 + 12 bytes glue to 16 = two 8-byte hashes, but these are 2 odd visitors.
        values = [b"abcd", b"efghijklmnop", b"abcd", b"12345678", b"12345678"]
        conn.executemany(f"insert into scans ({COLUMNS}) values (?, 1, 'x', 'DE', 'ios', ?)",
                         [(at + i, v) for i, v in enumerate(values)])
    conn.close()
    result = analytics.time_series([path], parse_query({"from": "2026-11-20",
                                                        "to": "2026-11-20"}))
    assert (result["series"][0]["scans"], result["series"][0]["visitors"]) == (5, 3)


def test_the_top_n_counts_are_handed_out_once_each_through_the_pipe():
    """Work stealing: readers in several threads take every index exactly once, also
    when there are more than a default pipe holds (64 KiB: 16,384 indexes)."""
    count = 20_000
    fd = analytics_worker._token_pipe(count)
    taken: list[list[int]] = [[], [], []]
    try:
        def read(mine):
            take = analytics_worker.taker(fd)
            while (j := take()) is not None:
                mine.append(j)

        threads = [threading.Thread(target=read, args=(mine,)) for mine in taken]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.close(fd)
    assert sorted(j for mine in taken for j in mine) == list(range(count))


def test_a_slow_share_reads_fewer_top_n_counts(demo_dbs, monkeypatch):
    """The share in this process, slowed down, leaves the top-N counts to the child."""
    real = shard.read_database
    here = []

    def slow(path, *args, **kwargs):
        if kwargs.get("buckets") == ():  # a top-N read taken from the pipe
            here.append(path)
        time.sleep(0.3)  # slows this share down; the child is not waited for
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shard, "read_database", slow)
    query = parse_query({"period": "daily", "from": "2026-10-01", "to": "2026-11-22"})
    result = analytics.time_series(demo_dbs, query, processes=2)
    monkeypatch.undo()
    assert len(here) < len(demo_dbs) // 2
    check(result, demo_dbs, query)


@pytest.mark.parametrize("shares, count", [(2, 366), (2, 54), (2, 13), (3, 366), (2, 1),
                                           (4, 3)])
def test_shares_split_the_buckets_into_runs_each_bucket_once(shares, count):
    parts = [analytics.share_buckets(k, shares, count) for k in range(shares)]
    assert sorted(i for part in parts for i in part) == list(range(count))
    if count >= 4 * shares:
        run = -(-count // (4 * shares))
        sizes = [len(part) for part in parts]
        assert max(sizes) - min(sizes) <= run
        # runs of consecutive buckets, not every other one
        assert parts[0][:run] == list(range(run)) and parts[1][0] == run
