"""What to back up: every SQLite database qrq knows, and whether a file changed.

A file last modified :data:`SETTLED_NS` before a backup started cannot have been
written since without its mtime changing (file times come from a clock that
ticks every few milliseconds; this leaves a wide margin). That lets a run skip
the snapshot of a database whose files are as they were at its last backup.
"""

from __future__ import annotations

import os
from pathlib import Path

from qrq.analytics import find_databases

SETTLED_NS = 2_000_000_000


def list_databases(settings) -> list[tuple[str, Path]]:
    """Every SQLite database qrq knows, as ``(name, path)``: app.db, queue.db (unless
    qrq's tables are in PostgreSQL) and the analytics databases (``QRQ_ANALYTICS_DBS``:
    a directory or a glob, by default ``<data>/analytics/*.db``).

    Names are paths relative to the data directory, so a restore into a directory
    lays the files out as the data directory has them.
    """
    # With a PostgreSQL database, app.db and queue.db are not used: the queue and app
    # tables are dumped from it (qrq/backup/postgres.py).
    dbs = [] if settings.database_url else [("app.db", settings.app_db),
                                            ("queue.db", settings.queue_db)]
    seen = {settings.app_db.resolve(), settings.queue_db.resolve()}
    location = getattr(settings, "analytics_dbs", "analytics")
    for path in find_databases(location, settings.data_dir):
        if not path.is_file() or path.name.endswith(("-wal", "-shm", "-journal")) \
                or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            name = path.resolve().relative_to(settings.data_dir.resolve()).as_posix()
        except ValueError:
            name = f"analytics/{path.name}"
        dbs.append((name, path))
    return dbs


def source_state(path: Path) -> dict[str, list[int] | None] | None:
    """``[device, inode, size, mtime]`` of the database file and of its WAL (None
    when absent or empty: an empty WAL holds nothing, and a read-only connection,
    such as a snapshot's, leaves one behind): SQLite changes at least one of them
    with every write. Not the ctime: SQLite running as root chowns the WAL each
    time it opens it, even to read.

    None when a rollback journal is left over: the file's bytes alone are then not
    the database.
    """
    journal = Path(f"{path}-journal")
    if journal.exists() and journal.stat().st_size:
        return None
    state: dict[str, list[int] | None] = {}
    for key, part in (("db", path), ("wal", Path(f"{path}-wal"))):
        try:
            st = os.stat(part)
        except FileNotFoundError:
            st = None
        state[key] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns] \
            if st is not None and (st.st_size or key == "db") else None
    return state


def settled(state: dict | None, started_ns: int) -> bool:
    """Whether every file in *state* was last written :data:`SETTLED_NS` before *started_ns*."""
    return state is not None and all(part is None or part[3] < started_ns - SETTLED_NS
                                     for part in state.values())


def source_bytes(path: Path) -> int:
    """The size of a database with its WAL."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
