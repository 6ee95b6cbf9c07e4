"""The weekly maintenance: log rotation, WAL checkpoint, VACUUM when idle.

On PostgreSQL only the logs are rotated: checkpoints are the server's own, and its
autovacuum reclaims dead rows while it runs (a ``VACUUM FULL`` would lock the queue's
tables), so the result says so instead of doing it.

The run lock and the catch-up state are in :mod:`qrq.queue.locks`, log rotation in
:mod:`qrq.queue.log_rotation`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrq.queue import jobs
from qrq.queue.log_rotation import rotate_logs

# The schedule helpers live in qrq.schedule; tasks and tests still reach them here.
from qrq.schedule import cron, due_now, last_due, zone  # noqa: F401
from qrq.sqlite_deadline import interrupt_when

# -- weekly maintenance ------------------------------------------------------------------

def checkpoint(storage) -> dict[str, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: copy the queue's WAL into its file and empty it."""
    busy, log, done = storage.checkpoint("truncate")
    return {"busy": busy, "wal_frames": log, "checkpointed": done}


def vacuum(conn: sqlite3.Connection, path: Path,
           stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """VACUUM the database *path* open on *conn* (then truncate its WAL); return its
    size before and after. *stop* aborts it (a task past its time limit)."""
    before = path.stat().st_size
    with interrupt_when(conn, stop):
        conn.execute("vacuum")
        conn.execute("pragma wal_checkpoint(truncate)")
    return {"before": before, "after": path.stat().st_size}


def _vacuum_file(path: Path, timeout: float, stop: Callable[[], bool]) -> dict[str, int]:
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        return vacuum(conn, path, stop)
    finally:
        conn.close()


def run_maintenance(storage, settings, job_id: str | None = None,
                    report: Callable[[float, str], None] = lambda pct, stage: None,
                    stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """The weekly maintenance: logs, a WAL checkpoint of the queue, VACUUM when idle.

    The queue database is vacuumed through *storage*'s connection, ``app.db``
    through a connection of its own.
    """
    result: dict[str, Any] = {}
    report(5, "rotating logs")
    result["logs"] = rotate_logs(settings.logs_dir, settings.log_max_age_days)
    if settings.database_url:
        result["checkpoint"] = "not needed on PostgreSQL (the server checkpoints)"
        result["vacuum"] = "left to PostgreSQL's autovacuum"
        report(100, "done")
        return result
    report(40, "checkpointing the queue database")
    result["checkpoint"] = checkpoint(storage)
    result["vacuum"] = {}
    if not settings.maintenance_vacuum:
        result["vacuum"] = "disabled"
    elif jobs.count_busy(storage, exclude=job_id):
        result["vacuum"] = "skipped: jobs are running or queued"
    else:
        queue_db = Path(storage.filename)
        report(60, f"vacuuming {queue_db.name}")
        with storage.db() as curs:
            result["vacuum"][queue_db.name] = vacuum(curs.connection, queue_db, stop)
        if settings.app_db.exists():
            report(80, f"vacuuming {settings.app_db.name}")
            result["vacuum"][settings.app_db.name] = _vacuum_file(
                settings.app_db, settings.busy_timeout, stop)
    report(100, "done")
    return result
