"""Reading ``scans_time`` from the file's pages (qrq.analytics.btree): the same entries
SQLite returns in the same read transaction, or None (the caller then asks SQLite);
never a torn snapshot, and no lock of the process's other readers dropped."""

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from qrq.analytics import btree, shard
from qrq.analytics.query import parse_query
from qrq.analytics.scans import SCHEMA, create_schema

COLUMNS = "id, scanned_at, template_id, domain, country, device, visitor_hash"
SELECT = ("select scanned_at, visitor_hash from scans indexed by scans_time "
          "where scanned_at >= ? and scanned_at < ? order by scanned_at, visitor_hash")
ALL = [(-2**63, 2**63 - 1)]


def write(path, rows, page_size=4096, journal="delete"):
    """A scan database of (id, scanned_at, visitor hash as an int) rows."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"pragma page_size = {page_size}")
        conn.execute(f"pragma journal_mode = {journal}")
        conn.execute(SCHEMA[0])
        create_schema(conn)
        with conn:
            conn.executemany(
                f"insert into scans ({COLUMNS}) values (?, ?, 1, 'x', 'DE', 'ios', ?)",
                [(i, t, h.to_bytes(8, "big")) for i, t, h in rows])
    return path


def pages_and_sql(path, ranges, sql=True):
    """What the pages give (None: not read) and what SQLite gives, in one transaction."""
    with btree.DatabaseFile(path) as file, \
            contextlib.closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)) as conn:
        conn.execute("begin")
        root, = conn.execute("select rootpage from sqlite_master "
                             "where name = 'scans_time'").fetchone()
        got = btree.read_time_hashes(file, conn, root, ranges)
        want = sql and [row for lo, hi in ranges for row in conn.execute(SELECT, (lo, hi))]
    if got is not None:
        got = [(t, h.to_bytes(8, "little")) for t, h in zip(got[0].tolist(), got[1].tolist(),
                                                           strict=True)]
    return got, want


def random_rows(count, seed, times=lambda r: r.randrange(1_700_000_000, 1_730_000_000)):
    r = random.Random(seed)
    return [(i + 1, times(r), r.getrandbits(64)) for i in range(count)]


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_the_pages_give_the_entries_sqlite_gives(tmp_path, page_size):
    """Trees of several levels (512-byte pages: the entries of interior pages count too),
    and every way a range can fall: several, empty, outside, cutting a page."""
    path = write(tmp_path / "s.db", random_rows(20_000, page_size), page_size)
    ranges_list = [ALL, [(1_710_000_000, 1_710_000_001)], [(0, 1_000)],
                   [(1_700_000_000, 1_701_000_000), (1_715_000_000, 1_715_100_000),
                    (1_729_000_000, 1_800_000_000)]]
    for ranges in ranges_list:
        got, want = pages_and_sql(path, ranges)
        assert got == want
    assert len(pages_and_sql(path, ALL)[0]) == 20_000


def test_only_the_subtrees_the_ranges_need_are_read(tmp_path, monkeypatch):
    """A day of a year's index reads a few pages, not every leaf; many small chunks
    give what one does."""
    path = write(tmp_path / "s.db", random_rows(50_000, 9), page_size=1024)
    walked = []
    items = btree._items
    monkeypatch.setattr(btree, "_items", lambda *args: walked.append(items(*args)) or
                        walked[-1])
    day = [(1_715_000_000, 1_715_086_400)]
    got, want = pages_and_sql(path, day)
    assert got == want and 0 < len(got) < 300
    got, want = pages_and_sql(path, ALL)
    assert got == want and len(got) == 50_000
    day_leaves, all_leaves = ([item for item in items if item >= 0] for items in walked)
    assert len(all_leaves) > 1000 and len(day_leaves) < 5
    monkeypatch.setattr(btree, "_CHUNK", 777)
    several = [(1_700_000_000, 1_701_000_000), (1_701_000_000, 1_701_000_001),
               (1_715_000_000, 1_720_000_000)]
    got, want = pages_and_sql(path, several)
    assert got == want and len(got) > 5_000


def test_a_name_that_is_not_utf8(tmp_path):
    """A file name of any bytes (SQLite opens it by its URI): read from the pages."""
    path = write(tmp_path / os.fsdecode(b"caf\xe9.db"), random_rows(300, 10))
    got, want = pages_and_sql(path, ALL)
    assert got == want and len(got) == 300


def test_unsorted_buckets_read_as_sorted_ones(tmp_path):
    path = write(tmp_path / "s.db", random_rows(3_000, 11))
    query = parse_query({"period": "weekly", "from": "2023-01-01", "to": "2025-12-31"})
    bounds = [b.start_ts for b in query.buckets()] + [2**40]
    shuffled = shard.read_database(path, query, bounds, buckets=(90, 60, 50, 70))
    ordered = shard.read_database(path, query, bounds, buckets=(50, 60, 70, 90))
    assert shuffled.scans == ordered.scans and len(ordered.scans) == 4


def test_every_integer_size_of_a_time_and_a_row_id(tmp_path):
    """SQLite stores an integer in 0 to 8 bytes by its value (0 and 1 in none): every
    size of time and row id, negative ones too, reads back as SQLite gives it."""
    times = [0, 1, -1, 5, -200, 300, 70_000, -9_000_000, 1_700_000_000, 2**31, 2**40,
             -2**47, 2**47 + 3, 2**62, -2**63, 2**63 - 1]
    ids = [0, 1, 2, 300, 70_000, 2**24, 2**40, 2**62, -5, -2**63, 2**63 - 1]
    r = random.Random(7)
    rows = [(ids[i] if i < len(ids) else 1000 + i, times[i % len(times)], r.getrandbits(64))
            for i in range(400)]
    path = write(tmp_path / "s.db", rows)
    got, want = pages_and_sql(path, ALL)
    assert got == want and len(got) == 400 - 25  # 2**63 - 1 lies past the range
    got, want = pages_and_sql(path, [(-2**47, 2), (2**31, 2**62)])
    assert got == want and got


def test_deleted_and_vacuumed_rows(tmp_path):
    """Pages with holes where rows were deleted, free pages, an auto-vacuum database's
    pointer-map pages, and after VACUUM."""
    path = tmp_path / "s.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("pragma auto_vacuum = full")
    write(path, random_rows(30_000, 3))
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("delete from scans where id % 3 = 0 or id between 5000 and 15000")
    got, want = pages_and_sql(path, ALL)
    assert got == want and len(got) == 13_333
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("vacuum")
    assert pages_and_sql(path, ALL)[0] == want


def test_an_empty_table(tmp_path):
    path = write(tmp_path / "s.db", [])
    assert pages_and_sql(path, ALL) == ([], [])


def test_what_is_not_qrqs_index_is_left_to_sqlite(tmp_path):
    """An index called scans_time on other columns, or partial, is not read from its
    pages (the report is then SQLite's, and still right)."""
    for other in ("create index scans_time on scans (scanned_at, device)",
                  "create index scans_time on scans (scanned_at, visitor_hash) "
                  "where country = 'DE'"):
        path = tmp_path / f"{len(other)}.db"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(SCHEMA[0])
            conn.execute(other)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert shard._schema(conn)[2] is None


def test_a_corrupt_tree_is_left_to_sqlite(tmp_path):
    """Two child pointers to one page, one that loops back to the root, or a truncated
    file: None, at once, and the report says the database is malformed instead of
    hanging."""
    path = write(tmp_path / "s.db", random_rows(5_000, 4), page_size=512)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        root, = conn.execute("select rootpage from sqlite_master "
                             "where name = 'scans_time'").fetchone()
    with open(path, "r+b") as f:
        base = (root - 1) * 512
        f.seek(base)
        page = f.read(512)
        assert page[0] == 0x02  # interior, as 5,000 entries on 512-byte pages make
        first = base + int.from_bytes(page[12:14], "big")
        f.seek(first)
        f.write(page[8:12])  # the first child: the right-most one again
        f.flush()
        assert pages_and_sql(path, ALL, sql=False)[0] is None
        f.seek(first)
        f.write(page[first - base:first - base + 4])  # mended
        f.flush()
        assert pages_and_sql(path, ALL, sql=False)[0] is not None
        f.seek(base + 8)
        f.write(root.to_bytes(4, "big"))  # the right-most child: the root itself
    assert pages_and_sql(path, ALL, sql=False)[0] is None
    query = parse_query({"period": "weekly", "from": "2023-01-01", "to": "2024-12-31"})
    part = shard.read_database(path, query, [b.start_ts for b in query.buckets()] + [2**40])
    assert part.skipped and "malformed" in part.warning
    os.truncate(path, os.path.getsize(path) - 1024)
    part = shard.read_database(path, query, [b.start_ts for b in query.buckets()] + [2**40])
    assert part.skipped and "malformed" in part.warning


WRITER = textwrap.dedent("""
    import random, sqlite3, sys
    path, journal, checkpoint_pages, batches, rows = sys.argv[1:6]
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute(f"pragma journal_mode = {journal}")
    conn.execute(f"pragma wal_autocheckpoint = {checkpoint_pages}")
    r = random.Random(1)
    print("ready", flush=True)
    for batch in range(int(batches)):
        if batch == 0 and int(batches) == 1:
            sys.stdin.readline()
        conn.execute("begin immediate")
        if rows == "delete":  # a change that leaves the file's size as it is
            conn.execute("delete from scans where id in (select id from scans limit 100)")
        else:
            conn.executemany(
                "insert into scans (scanned_at, template_id, domain, country, device, "
                "visitor_hash) values (?, 1, 'x', 'DE', 'ios', ?)",
                [(r.randrange(1_700_000_000, 1_730_000_000), r.randbytes(8))
                 for _ in range(100)])
        conn.execute("commit")
    print("done", flush=True)
    sys.stdin.readline()
    if checkpoint_pages == "0":
        conn.execute("pragma wal_checkpoint")
        print("checkpointed", flush=True)
        sys.stdin.readline()
""")


def start_writer(tmp_path, path, journal, checkpoint_pages, batches, rows="insert"):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(path), journal,
                               str(checkpoint_pages), str(batches), rows],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "ready\n"
    return writer


@pytest.mark.parametrize("rows", ["insert", "delete"])
@pytest.mark.parametrize("through", ["path", "symlink"])
def test_commits_still_in_the_wal_are_read_by_sqlite(tmp_path, rows, through):
    """While the WAL holds commits not yet copied into the file, the file is not the
    snapshot: None, and SQLite's answer has the change (100 rows added; or deleted,
    which leaves the file as long as it was). Once they are copied in, the pages give
    them. Through a symbolic link too: the WAL lies beside the file SQLite opens."""
    path = write(tmp_path / "s.db", random_rows(1_000, 5), journal="wal")
    read_at = path
    if through == "symlink":
        (tmp_path / "links").mkdir()
        read_at = tmp_path / "links" / "shard.db"
        read_at.symlink_to(path)
    writer = start_writer(tmp_path, path, "wal", 0, 1, rows)
    after = 1_100 if rows == "insert" else 900
    try:
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "done\n"
        got, want = pages_and_sql(read_at, ALL)
        assert got is None and len(want) == after
        writer.stdin.write("checkpoint\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "checkpointed\n"
        got, want = pages_and_sql(read_at, ALL)
        assert got == want and len(got) == after
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        writer.stdout.close()


@pytest.mark.parametrize("journal,checkpoint_pages", [("wal", 1), ("wal", 1000),
                                                      ("delete", 0)])
def test_reads_during_writes_are_whole_snapshots(tmp_path, journal, checkpoint_pages,
                                                  monkeypatch):
    """A writer commits 100 rows at a time (in WAL mode checkpointing after every
    commit, or rarely; or with a rollback journal) while reports read: every read
    counts a whole number of commits, never fewer than the read before, and matches
    SQLite's count in its own transaction."""
    path = write(tmp_path / "s.db", [], journal=journal)
    query = parse_query({"period": "weekly", "from": "2023-01-01", "to": "2025-12-31"})
    bounds = [b.start_ts for b in query.buckets()] + [2**40]
    read = {"pages": 0, "sqlite": 0}
    read_time_hashes = btree.read_time_hashes

    def counted(*args):
        entries = read_time_hashes(*args)
        read["sqlite" if entries is None else "pages"] += 1
        return entries

    monkeypatch.setattr(btree, "read_time_hashes", counted)
    writer = start_writer(tmp_path, path, journal, checkpoint_pages, 300)
    try:
        totals = []
        deadline = time.monotonic() + 60
        while len(totals) < 400 and time.monotonic() < deadline:
            part = shard.read_database(path, query, bounds, dims=False, busy_timeout=30)
            assert not part.skipped, part.warning
            totals.append(sum(part.scans.values()))
            if totals[-1] == 30_000:
                break
        assert totals and all(t % 100 == 0 for t in totals), totals
        assert totals == sorted(totals)
        if journal == "delete":  # the shared lock alone makes the file the snapshot
            assert read["sqlite"] == 0 and read["pages"] > 0
    finally:
        writer.stdin.close()
        writer.kill()
        writer.wait()
        writer.stdout.close()


def test_a_stale_wal_index_sqlite_does_not_use_is_not_trusted(tmp_path, small_disk):
    """A copy of a WAL database taken while its writer worked (the file and its -shm
    after a checkpoint, then a commit, then the -wal, as cp copies them) on a file
    system this process may not write: SQLite cannot use that -shm and reads the WAL
    itself, and so the pages are not read either."""
    source = write(tmp_path / "s.db", random_rows(1_000, 8), journal="wal")
    writer = sqlite3.connect(source, isolation_level=None)
    try:
        writer.execute("pragma wal_autocheckpoint = 0")
        writer.execute("delete from scans where id <= 10")
        writer.execute("pragma wal_checkpoint")  # every frame copied into the file
        for suffix in ("", "-shm"):
            shutil.copy(f"{source}{suffix}", f"{small_disk / 's.db'}{suffix}")
        writer.execute("delete from scans where id % 10 = 0")  # the file as long as it was
        shutil.copy(f"{source}-wal", f"{small_disk / 's.db'}-wal")
    finally:
        writer.close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    got, want = pages_and_sql(small_disk / "s.db", ALL)
    assert len(want) == 1_000 - 10 - 99 and got is None


def test_a_wal_beside_a_rollback_journal_file_is_read_by_sqlite(tmp_path):
    """A file whose header says rollback journal, restored with a WAL that holds
    commits: SQLite reads that WAL (and so the file alone is not the snapshot)."""
    source = write(tmp_path / "s.db", random_rows(1_000, 12), journal="wal")
    writer = sqlite3.connect(source, isolation_level=None)
    try:
        writer.execute("pragma wal_autocheckpoint = 0")
        writer.execute("delete from scans where id in (500, 501, 502)")  # page 1 untouched
        (tmp_path / "restored").mkdir()
        copy = tmp_path / "restored" / "s.db"
        for suffix in ("", "-wal"):
            shutil.copy(f"{source}{suffix}", f"{copy}{suffix}")
    finally:
        writer.close()
    with open(copy, "r+b") as f:
        f.seek(18)
        f.write(b"\x01\x01")
    got, want = pages_and_sql(copy, ALL)
    assert len(want) == 997 and got is None


def test_a_file_swapped_in_and_back_is_not_read(tmp_path):
    """The path names another file when SQLite opens it, and the first one again when
    the pages are read (two renames): same size, same header counters, other hashes.
    The entries at the ranges' edges differ from SQLite's: None."""
    rows = random_rows(5_000, 13)
    path = write(tmp_path / "s.db", rows)
    other = write(tmp_path / "other.db", [(i, t, h ^ 1) for i, t, h in rows])
    os.link(path, tmp_path / "kept.db")
    with btree.DatabaseFile(path) as file:  # this descriptor: the first file
        os.rename(other, path)
        with contextlib.closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)) as conn:
            conn.execute("begin")  # SQLite: the other file
            root, = conn.execute("select rootpage from sqlite_master "
                                 "where name = 'scans_time'").fetchone()
            os.rename(tmp_path / "kept.db", path)
            assert btree.read_time_hashes(file, conn, root, ALL) is None
            assert btree.read_time_hashes(file, conn, root, [(0, 1)]) is not None  # empty


def test_closing_the_file_drops_no_lock_of_another_reader(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it:
    a read inside another one keeps its descriptors open until the outer one ends, so
    the outer read's shared lock still keeps a writer out."""
    path = write(tmp_path / "s.db", random_rows(500, 6))
    query = parse_query({"period": "weekly", "from": "2023-01-01", "to": "2025-12-31"})
    bounds = [b.start_ts for b in query.buckets()] + [2**40]

    def write_now():
        return subprocess.run(
            [sys.executable, "-c", "import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], timeout=0)\n"
             "c.execute(\"update scans set device = 'android' where id = 1\")\n"
             "c.commit()", str(path)], capture_output=True, text=True)

    with btree.DatabaseFile(path), \
            contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as outer:
        outer.execute("begin")
        outer.execute("select count(*) from scans").fetchone()
        part = shard.read_database(path, query, bounds)
        assert sum(part.scans.values()) == 500
        refused = write_now()
        assert refused.returncode != 0 and "database is locked" in refused.stderr
    assert write_now().returncode == 0
    own = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(path) not in own


def test_a_fifo_among_the_databases_is_skipped_without_waiting(tmp_path):
    """A FIFO named like a database: opening it would wait for a writer (SQLite's open
    too); it is skipped with a warning at once."""
    os.mkfifo(tmp_path / "stuck.db")
    query = parse_query({"period": "weekly", "from": "2023-01-01", "to": "2025-12-31"})
    bounds = [b.start_ts for b in query.buckets()] + [2**40]
    done = []
    reader = threading.Thread(target=lambda: done.append(
        shard.read_database(tmp_path / "stuck.db", query, bounds)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if not done:  # let the stuck open go on, then fail
        os.close(os.open(tmp_path / "stuck.db", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=30)
    assert done and done[0].skipped and done[0].warning == "skipped: not a regular file"
