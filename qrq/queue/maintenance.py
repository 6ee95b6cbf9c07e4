"""Scheduled housekeeping: schedules in a time zone, the run lock, catch-up of missed
runs, and the weekly maintenance (log rotation, WAL checkpoint, VACUUM when idle).

The lock and the schedule state are rows in the queue database
(``maintenance_lock``, ``maintenance_state`` in :mod:`qrq.queue.schema`), changed in
``begin immediate`` transactions, so several consumers (and the CLI) agree on
who runs and on which missed run is caught up, without any other service.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qrq.errors import Conflict
from qrq.queue.schema import MAINTENANCE

# The schedule helpers live in qrq.schedule; tasks and tests still reach them here.
from qrq.schedule import cron, due_now, last_due, zone  # noqa: F401

LOCK_TTL = 60.0  # seconds a lock outlives its holder's last renewal


# -- the queue database ------------------------------------------------------------------

def connect(queue_db: Path, timeout: float = 10.0) -> sqlite3.Connection:
    conn = sqlite3.connect(queue_db, timeout=timeout, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    for ddl in MAINTENANCE:
        conn.execute(ddl)
    return conn


@contextlib.contextmanager
def _transaction(queue_db: Path, timeout: float) -> Iterator[sqlite3.Connection]:
    conn = connect(queue_db, timeout)
    try:
        conn.execute("begin immediate")
        try:
            yield conn
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")
    finally:
        conn.close()


def _get(conn: sqlite3.Connection, key: str) -> float | None:
    row = conn.execute("select value from maintenance_state where key = ?", (key,)).fetchone()
    return row[0] if row else None


def _put(conn: sqlite3.Connection, key: str, value: float) -> None:
    conn.execute("insert into maintenance_state (key, value) values (?, ?) "
                 "on conflict (key) do update set value = excluded.value", (key, value))


# -- the lock ----------------------------------------------------------------------------

def holder_id(job_id: str | None = None) -> str:
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"job {job_id} ({where})" if job_id else f"cli ({where})"


def try_lock(queue_db: Path, name: str, holder: str, *, ttl: float = LOCK_TTL,
             timeout: float = 10.0, now: float | None = None) -> str | None:
    """Take lock *name* for *holder*; return ``None`` on success, else who holds it.

    A lock whose holder stopped renewing it for *ttl* seconds (its process died)
    is taken over. The same holder may take its own lock again (a job re-run).
    """
    now = time.time() if now is None else now
    with _transaction(queue_db, timeout) as conn:
        row = conn.execute("select holder, expires_at from maintenance_lock where name = ?",
                           (name,)).fetchone()
        if row and row[0] != holder and row[1] > now:
            return row[0]
        conn.execute("insert or replace into maintenance_lock (name, holder, acquired_at, "
                     "expires_at) values (?, ?, ?, ?)", (name, holder, now, now + ttl))
    return None


def renew_lock(queue_db: Path, name: str, holder: str, ttl: float = LOCK_TTL,
               timeout: float = 10.0) -> bool:
    with _transaction(queue_db, timeout) as conn:
        return conn.execute("update maintenance_lock set expires_at = ? where name = ? "
                            "and holder = ?", (time.time() + ttl, name, holder)).rowcount > 0


def release_lock(queue_db: Path, name: str, holder: str, timeout: float = 10.0) -> None:
    with _transaction(queue_db, timeout) as conn:
        conn.execute("delete from maintenance_lock where name = ? and holder = ?",
                     (name, holder))


class Locked(Conflict):
    """Another run holds the lock."""


@contextlib.contextmanager
def hold_lock(queue_db: Path, name: str, holder: str, *, ttl: float = LOCK_TTL,
              timeout: float = 10.0) -> Iterator[None]:
    """Hold lock *name* while the block runs, renewing it every third of *ttl*.

    :raises Locked: someone else holds it.
    """
    other = try_lock(queue_db, name, holder, ttl=ttl, timeout=timeout)
    if other is not None:
        raise Locked(f"{name} is already running: {other}")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            with contextlib.suppress(sqlite3.Error):
                renew_lock(queue_db, name, holder, ttl, timeout)

    beat = threading.Thread(target=renew, name=f"qrq-{name}-lock", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        release_lock(queue_db, name, holder, timeout)


def run_exclusive(queue_db: Path, name: str, job_id: str, kind: str, due_at: float | None,
                  body: Callable[[], tuple[dict, bool]], timeout: float = 10.0) -> dict:
    """Run *body* under lock *name*, once per due time; return its result.

    *body* returns ``(result, ok)``; an ok run is recorded as the last success.
    A scheduled or catch-up run whose due time a successful run already covered,
    or that finds the lock held, is skipped (``{"skipped": why}``); a manual run
    that finds the lock held raises :class:`Locked`.
    """
    try:
        with hold_lock(queue_db, name, holder_id(job_id), timeout=timeout):
            if kind != "manual" and due_at is not None and \
                    last_success(queue_db, name, timeout) >= due_at:
                return {"skipped": f"{name} already ran since it was due"}
            started = time.time()
            result, ok = body()
            if ok:
                record_success(queue_db, name, started, timeout)
            return result
    except Locked as exc:
        if kind == "manual":
            raise
        return {"skipped": str(exc)}


# -- catch-up ------------------------------------------------------------------------------

def claim_catch_up(queue_db: Path, name: str, due: float | None, *,
                   now: float | None = None, timeout: float = 10.0) -> bool:
    """Whether the caller should enqueue a catch-up run of schedule *name*.

    True at most once per due time, whichever process asks first: when the last
    due time *due* passed after the schedule was first seen here, no run has
    succeeded since it, and nobody claimed it yet. The first call for a schedule
    only records when it was first seen (a new install does not run at once).
    """
    now = time.time() if now is None else now
    with _transaction(queue_db, timeout) as conn:
        first_seen = _get(conn, f"{name}:first_seen")
        if first_seen is None:
            _put(conn, f"{name}:first_seen", now)
            return False
        if due is None or due <= first_seen:
            return False
        if max(_get(conn, f"{name}:claimed") or 0, _get(conn, f"{name}:succeeded") or 0) >= due:
            return False
        _put(conn, f"{name}:claimed", due)
        return True


def last_success(queue_db: Path, name: str, timeout: float = 10.0) -> float:
    """When the last successful run of *name* started (0 if none)."""
    conn = connect(queue_db, timeout)
    try:
        return _get(conn, f"{name}:succeeded") or 0.0
    finally:
        conn.close()


def record_success(queue_db: Path, name: str, started: float, timeout: float = 10.0) -> None:
    with _transaction(queue_db, timeout) as conn:
        if (_get(conn, f"{name}:succeeded") or 0) < started:
            _put(conn, f"{name}:succeeded", started)


# -- weekly maintenance ------------------------------------------------------------------

_ROTATED = re.compile(r".+\.log\.(\d{8}T\d{6}Z)(?:-\d+)?(\.gz)?")


def rotate_logs(logs_dir: Path, max_age_days: float, now: float | None = None) -> dict:
    """Rotate, compress and delete qrq's log files in *logs_dir*.

    Each non-empty ``*.log`` is copied to ``<name>.<UTC time>.gz`` and truncated in
    place (processes keep their open handle; they write in append mode, so the
    next line lands at the start). Rotated files older than *max_age_days* go.
    Lines written between the copy and the truncation are lost (as with
    logrotate's copytruncate); rotation runs at a quiet hour.
    """
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    report: dict[str, list[str]] = {"rotated": [], "deleted": []}
    if not logs_dir.is_dir():
        return report
    for log in sorted(logs_dir.glob("*.log")):
        if not log.is_file() or log.stat().st_size == 0:
            continue
        target, n = logs_dir / f"{log.name}.{stamp}.gz", 1
        while target.exists():
            n += 1
            target = logs_dir / f"{log.name}.{stamp}-{n}.gz"
        tmp = target.with_name(f".{target.name}.tmp")
        with open(log, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
        os.truncate(log, 0)
        report["rotated"].append(target.name)
    cutoff = now - max_age_days * 86400
    for path in sorted(logs_dir.iterdir()):
        match = _ROTATED.fullmatch(path.name)
        if not match:
            continue
        if not match[2]:  # rotated by someone else and left plain: compress it
            with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path.unlink()
            path = Path(f"{path}.gz")
        rotated_at = datetime.datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC).timestamp()
        if rotated_at < cutoff:
            path.unlink(missing_ok=True)
            report["deleted"].append(path.name)
    return report


def checkpoint(db: Path, timeout: float = 10.0) -> dict[str, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: copy the WAL into the database and empty it."""
    conn = sqlite3.connect(db, timeout=timeout)
    try:
        busy, log, done = conn.execute("pragma wal_checkpoint(truncate)").fetchone()
    finally:
        conn.close()
    return {"busy": busy, "wal_frames": log, "checkpointed": done}


def active_jobs(queue_db: Path, exclude: str | None = None, timeout: float = 10.0) -> int:
    """Jobs running or waiting to run, other than *exclude*."""
    conn = connect(queue_db, timeout)
    try:
        return conn.execute("select count(*) from job where status in ('queued', 'running') "
                            "and id is not ?", (exclude,)).fetchone()[0]
    finally:
        conn.close()


def vacuum(db: Path, timeout: float = 10.0,
           stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """VACUUM *db* (then truncate its WAL); return its size before and after."""
    before = db.stat().st_size
    conn = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    conn.set_progress_handler(lambda: 1 if stop() else 0, 10_000)
    try:
        conn.execute("vacuum")
        conn.execute("pragma wal_checkpoint(truncate)")
    finally:
        conn.close()
    return {"before": before, "after": db.stat().st_size}


def run_maintenance(settings, job_id: str | None = None,
                    report: Callable[[float, str], None] = lambda pct, stage: None,
                    stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """The weekly maintenance: logs, a WAL checkpoint of the queue, VACUUM when idle."""
    result: dict[str, Any] = {}
    report(5, "rotating logs")
    result["logs"] = rotate_logs(settings.logs_dir, settings.log_max_age_days)
    report(40, "checkpointing the queue database")
    result["checkpoint"] = checkpoint(settings.queue_db, settings.busy_timeout)
    result["vacuum"] = {}
    if not settings.maintenance_vacuum:
        result["vacuum"] = "disabled"
    elif active_jobs(settings.queue_db, job_id, settings.busy_timeout):
        result["vacuum"] = "skipped: jobs are running or queued"
    else:
        for pct, db in ((60, settings.queue_db), (80, settings.app_db)):
            if db.exists():
                report(pct, f"vacuuming {db.name}")
                result["vacuum"][db.name] = vacuum(db, settings.busy_timeout, stop)
    report(100, "done")
    return result
