"""A SQLite queue moved to PostgreSQL refuses every write (``qrq migrate-to-postgres``).

The move puts triggers on the queue's tables before it copies them, so a process still
open on the old files (a web app that was not stopped) cannot change anything there
that the copy would not carry: a job queued where no consumer would ever run it, a
cancel or a resume that would be lost. The write fails, and the request answers 503
instead of a job id or an "ok" that means nothing; ``/healthz`` says so too, so that a
load balancer drops the process. A process that opens the files later has passed the
check that refuses moved files (:func:`qrq.config.load.refuse_moved_files`): someone
deleted the note to go back to them, so the triggers go too.
"""

from __future__ import annotations

import sqlite3

from qrq.errors import Unavailable

MOVED = "this queue moved to PostgreSQL"
TABLES = "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'"


def freeze(conn: sqlite3.Connection) -> None:
    """Refuse every write to the queue's tables on *conn* (the move's own connection)."""
    with conn:
        for table, in conn.execute(TABLES).fetchall():
            for change in ("insert", "update", "delete"):
                conn.execute(f"create trigger if not exists qrq_moved_{table}_{change} "
                             f"before {change} on {table} "
                             f"begin select raise(abort, '{MOVED}'); end")


FIND = "select name from sqlite_master where type = 'trigger' and name like 'qrq_moved_%'"


def thaw(curs) -> None:
    """Drop the triggers of :func:`freeze` (*curs* in a write transaction)."""
    for name, in curs.execute(FIND).fetchall():
        curs.execute(f"drop trigger if exists {name}")


def refused(exc: sqlite3.IntegrityError) -> Exception:
    """*exc*, or :class:`Unavailable` when it is a moved queue's refusal."""
    if MOVED not in str(exc):
        return exc
    return Unavailable(f"{MOVED} (qrq migrate-to-postgres): this process still uses its "
                       "old SQLite files; restart it with QRQ_DATABASE_URL")
