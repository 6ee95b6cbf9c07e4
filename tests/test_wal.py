"""The queue's WAL stays bounded while a real consumer runs (issue 18).

SQLite's own checkpoints cannot start the WAL over while another process reads it; the
consumer's commits checkpoint it (RESTART) once it passes its limit, its idle thread
truncates what a burst left, and no reader keeps a snapshot open between polls.
"""

import os
import sqlite3

import pytest

from qrq.queue import huey, submit
from qrq.queue.connections import JOURNAL_SIZE_LIMIT, PAGE_SIZE
from qrq.queue.sqlite_storage import LeasedSqliteStorage
from tests import slow_tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.sqlite_only("SQLite's WAL file (PostgreSQL manages its own)")]
SLOW_TASKS = {"QRQ_TASK_MODULES": "tests.slow_tasks"}
WAL_BOUND = 16 << 20  # issue 18: the WAL never exceeds this while jobs drain


def wal_size(settings) -> int:
    try:
        return os.path.getsize(f"{settings.queue_db}-wal")
    except FileNotFoundError:
        return 0


def wal_salts(settings) -> bytes:
    """The WAL header's salts: SQLite changes them each time a checkpoint lets the WAL
    start over (b"" while there is no WAL)."""
    try:
        with open(f"{settings.queue_db}-wal", "rb") as wal:
            return wal.read(24)[16:24]
    except FileNotFoundError:
        return b""


def finished(count: int) -> bool:
    return huey.storage.sql("select count(*) from job where status = 'finished'",
                            results=True)[0][0] == count


def registered(workers: int) -> bool:
    rows = huey.storage.sql("select workers from consumer", results=True)
    return bool(rows) and rows[0][0] == workers


def test_a_checkpoint_completes_while_four_workers_poll(settings, consumer):
    worker = consumer(workers=4, extra_env=SLOW_TASKS)
    wait_until(lambda: registered(4), message="the consumer's registration")
    conn = sqlite3.connect(settings.queue_db, timeout=10, isolation_level=None)
    try:
        for _ in range(20):
            # busy 0: no reader held a snapshot; log 0: the WAL was truncated to nothing
            # as the checkpoint returned. (Its size read afterwards can already hold the
            # start of the consumer's next heartbeat write: CI saw 32 bytes, a header.)
            busy, log, _ = conn.execute("pragma wal_checkpoint(truncate)").fetchone()
            assert (busy, log) == (0, 0)
    finally:
        conn.close()
    assert "Traceback" not in worker.output()


def test_the_wal_shrinks_back_after_a_burst(settings, consumer):
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(1500)]
    consumer(workers=4, extra_env=SLOW_TASKS)
    wait_until(lambda: huey.storage.sql(
        "select count(*) from job where status = 'finished'", results=True)[0][0] == len(ids),
        timeout=120, message="the burst to drain")
    wait_until(lambda: wal_size(settings) <= JOURNAL_SIZE_LIMIT, timeout=30,
               message="the WAL to shrink back")


def test_a_new_queue_file_has_small_pages_and_an_older_one_keeps_its_own(tmp_path, settings):
    # Each commit writes every page it changed whole: smaller pages, fewer bytes per job.
    assert huey.storage.sql("pragma page_size", results=True)[0][0] == PAGE_SIZE == 2048
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("pragma journal_mode = wal")
        conn.execute("create table t (x)")
    storage = LeasedSqliteStorage("older", filename=str(older))
    try:
        assert storage.sql("pragma page_size", results=True)[0][0] == 4096
        assert storage.sql("select count(*) from t", results=True)[0][0] == 0
    finally:
        storage.close()


def test_connections_limit_the_wal_they_keep(settings):
    limit = huey.storage.conn.execute("pragma journal_size_limit").fetchone()[0]
    assert limit == JOURNAL_SIZE_LIMIT


def test_the_wal_starts_over_and_stays_bounded_while_four_workers_drain(settings, consumer):
    # ~28 KB of WAL per drained job: without checkpoints that complete while the
    # workers poll, 3,000 jobs would leave a WAL of tens of MB.
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(3000)]
    salts_before = wal_salts(settings)
    worker = consumer(workers=4, extra_env=SLOW_TASKS)
    peak = 0

    def drained() -> bool:
        nonlocal peak
        peak = max(peak, wal_size(settings))
        return finished(len(ids))

    wait_until(drained, timeout=180, interval=0.005, message="the burst to drain")
    assert wal_salts(settings) != salts_before  # the WAL started over
    assert peak <= WAL_BOUND
    assert "Traceback" not in worker.output()


def test_a_commit_past_the_limit_checkpoints_and_the_next_starts_the_wal_over(settings):
    storage = huey.storage
    storage.wal_restart_bytes = 64 << 10  # a small limit: a few commits pass it
    storage.close()
    try:
        # A consumer's connection: its commits checkpoint, SQLite's autocheckpoint does not.
        assert storage.conn.execute("pragma wal_autocheckpoint").fetchone()[0] == 0
        salts = wal_salts(settings)
        for n in range(200):
            storage.sql("insert into kv (queue, key, value) values (?, ?, ?)",
                        ("wal-test", f"k{n}", b"x" * 2000), commit=True)
        assert wal_salts(settings) != salts  # the WAL started over
    finally:
        storage.wal_restart_bytes = None
        storage.close()


def test_a_reader_holding_its_snapshot_makes_the_commit_give_up_not_fail(settings):
    storage = huey.storage
    storage.sql("insert into kv (queue, key, value) values ('wal-test', 'k', x'00')",
                commit=True)
    reader = sqlite3.connect(settings.queue_db, isolation_level=None)
    storage.wal_restart_bytes = 64 << 10
    storage.close()
    try:
        reader.execute("begin")
        reader.execute("select count(*) from kv").fetchone()  # a snapshot, held open
        salts = None
        for n in range(100):
            storage.sql("insert into kv (queue, key, value) values (?, ?, ?)",
                        ("wal-test", f"r{n}", b"x" * 2000), commit=True)
            salts = salts or wal_salts(settings)  # the WAL as the first commit left it
        assert wal_salts(settings) == salts  # the reader still needs the old WAL
        assert storage.sql("select count(*) from kv where queue = 'wal-test'",
                           results=True)[0][0] == 101  # every commit kept
        reader.execute("commit")
    finally:
        reader.close()
        storage.wal_restart_bytes = None
        storage.close()
