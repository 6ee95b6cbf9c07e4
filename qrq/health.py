"""Health probes for ``GET /healthz`` and ``qrq health``: one implementation for both.

Each database is read once; a failure is reported by name (details go to the
log). The queue database reports ``storage_full`` when it cannot grow (the
storage's own judgement: a write failed for lack of space, or its disk is nearly
full), so an operator sees the cause rather than "error".
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from qrq import pg_errors
from qrq.appdb import db as appdb
from qrq.errors import StorageFull
from qrq.humanize import format_bytes
from qrq.queue import signing, stats
from qrq.queue.connections import FREE_SPACE_MIN

logger = logging.getLogger("qrq.health")


# What each state means to an operator, after the database's name.
MEANINGS = {"storage_full": "has no space left", "no_tables": "has no qrq tables (run qrq "
            "init; to move an installation, qrq migrate-to-postgres)",
            "wrong_key": "is signed with another key than this process's (a qrq key adopt "
            "since it started? qrq key show)",
            "moved": "moved to PostgreSQL (qrq migrate-to-postgres): restart this process "
            "with QRQ_DATABASE_URL",
            "error": "unreachable"}


def check_databases(storage, serializer=None,
                    details: dict[str, str] | None = None) -> dict[str, str]:
    """``{"queue_db": state, "app_db": state}``, each ``"ok"``, ``"storage_full"``,
    ``"no_tables"`` (it answers, but qrq's tables were never made there),
    ``"wrong_key"`` (the queue's key is no longer *serializer*'s, when given),
    ``"moved"`` (a SQLite queue moved to PostgreSQL) or ``"error"``. *details*, when
    given, gets the reason of each ``error``, ``no_tables`` and ``storage_full``, one
    line each (what the log says), for a message that stands on its own."""
    checks, details = {}, {} if details is None else details
    url = getattr(storage, "url", "")
    try:
        stats.probe(storage)
        checks["queue_db"] = "storage_full" if storage.is_full() else "ok"
        if checks["queue_db"] == "storage_full":
            details["queue_db"] = _space_left(storage)
        if checks["queue_db"] == "ok" and serializer is not None and signing.refusal(
                storage, serializer):
            checks["queue_db"] = "wrong_key"
        elif checks["queue_db"] == "ok" and storage.moved_away():
            checks["queue_db"] = "moved"
    except StorageFull as exc:
        checks["queue_db"] = "storage_full"
        details["queue_db"] = exc.message
    except Exception as exc:  # whatever the database raises, it is unhealthy
        details["queue_db"] = _failed("queue database", exc, url)
        checks["queue_db"] = "error"
    try:
        appdb.probe()
        checks["app_db"] = "ok"
    except Exception as exc:
        details["app_db"] = _failed("app database", exc, url)
        checks["app_db"] = "no_tables" if missing_table(exc) else "error"
    return checks


def _space_left(storage) -> str:
    """Why *storage* (not full when probed) counts as full, in words."""
    if storage.full_since is not None:
        return "a write failed for lack of space, and none has succeeded since"
    folder = os.path.dirname(os.path.abspath(storage.filename))
    try:
        free = format_bytes(shutil.disk_usage(folder).free)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    return (f"{free} free in {folder}, under the {format_bytes(FREE_SPACE_MIN)} a queue "
            "database needs to grow")


def missing_table(exc: BaseException) -> bool:
    """Whether *exc* (or what it wraps: peewee wraps the driver's) says a table is
    missing: SQLite's "no such table", PostgreSQL's undefined_table (42P01)."""
    while exc is not None:
        if "no such table" in str(exc) or getattr(exc, "sqlstate", None) == "42P01":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _failed(name: str, exc: Exception, url: str) -> str:
    """Log one line for the operator (a probe fails the same way every time), without
    the password of the PostgreSQL *url*, and return it; the traceback only at debug
    level."""
    text = pg_errors.redact(str(exc), url) if url else str(exc)
    line = f"{type(exc).__name__}: {' '.join(text.split())}".rstrip(": ")
    logger.error("health check: %s: %s", name, line)
    logger.debug("health check: %s", name, exc_info=exc)
    return line


def heartbeat_age(storage, host: str | None = None, now: float | None = None) -> float | None:
    """Seconds since the newest consumer heartbeat (on *host*), or None without one."""
    last = stats.last_heartbeat(storage, host)
    if last is None:
        return None
    return (time.time() if now is None else now) - last
