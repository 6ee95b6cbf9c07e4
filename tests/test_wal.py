"""The queue's WAL stays bounded while a real consumer runs (issue 18).

SQLite's own checkpoints cannot start the WAL over while another process reads it;
the consumer truncates it, and no reader keeps a snapshot open between polls.
"""

import os
import sqlite3

import pytest

from qrq.queue import huey, submit
from qrq.queue.connections import JOURNAL_SIZE_LIMIT
from tests import slow_tasks
from tests.conftest import wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.sqlite_only("SQLite's WAL file (PostgreSQL manages its own)")]
SLOW_TASKS = {"QRQ_TASK_MODULES": "tests.slow_tasks"}


def wal_size(settings) -> int:
    try:
        return os.path.getsize(f"{settings.queue_db}-wal")
    except FileNotFoundError:
        return 0


def registered(workers: int) -> bool:
    rows = huey.storage.sql("select workers from consumer", results=True)
    return bool(rows) and rows[0][0] == workers


def test_a_checkpoint_completes_while_four_workers_poll(settings, consumer):
    worker = consumer(workers=4, extra_env=SLOW_TASKS)
    wait_until(lambda: registered(4), message="the consumer's registration")
    conn = sqlite3.connect(settings.queue_db, timeout=10, isolation_level=None)
    try:
        for _ in range(20):
            busy, _, _ = conn.execute("pragma wal_checkpoint(truncate)").fetchone()
            assert busy == 0
            assert wal_size(settings) == 0
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


def test_connections_limit_the_wal_they_keep(settings):
    limit = huey.storage.conn.execute("pragma journal_size_limit").fetchone()[0]
    assert limit == JOURNAL_SIZE_LIMIT
