"""Health probes for ``GET /healthz`` and ``qrq health``: one implementation for both.

Each database is read once; a failure is reported by name (details go to the
log). A database, or the disk under the data directory, that has no room left
reports ``storage_full``, so an operator sees the cause rather than "error".
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from qrq.appdb import db as appdb
from qrq.queue import stats

logger = logging.getLogger("qrq.health")

# Below this much free space SQLite cannot grow a journal or a WAL: treat it as full.
MIN_FREE_BYTES = 1 << 20
_SQLITE_FULL = 13


def _state(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    for error in (exc, cause):
        if type(error).__name__ == "StorageFull" or \
                getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or \
                "disk is full" in str(error):
            return "storage_full"
    return "error"


def check_databases(storage, data_dir: Path,
                    min_free: int | None = None) -> dict[str, str]:
    """``{"queue_db": state, "app_db": state}``, each ``"ok"``, ``"storage_full"`` or
    ``"error"``; a data directory with less than *min_free* bytes free makes both
    ``"storage_full"``."""
    min_free = MIN_FREE_BYTES if min_free is None else min_free
    checks = {}
    for name, probe in (("queue_db", lambda: stats.probe(storage)),
                        ("app_db", appdb.probe)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # whatever a database raises, it is unhealthy
            logger.exception("health check: %s", name)
            checks[name] = _state(exc)
    try:
        full = shutil.disk_usage(data_dir).free < min_free
    except OSError:
        full = False
    if full:
        checks = {name: "storage_full" if state == "ok" else state
                  for name, state in checks.items()}
    return checks


def heartbeat_age(storage, host: str | None = None, now: float | None = None) -> float | None:
    """Seconds since the newest consumer heartbeat (on *host*), or None without one."""
    last = stats.last_heartbeat(storage, host)
    if last is None:
        return None
    return (time.time() if now is None else now) - last
