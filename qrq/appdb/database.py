"""The app database handle: a peewee proxy bound at start-up (deferred initialisation).

Models declare themselves against ``app_db`` at import time; :func:`qrq.appdb.db.init_db`
binds it to ``<data>/app.db`` (SQLite) or, when ``QRQ_DATABASE_URL`` is set, to that
PostgreSQL database: the same models and queries, a different peewee database behind
the proxy.
"""

from __future__ import annotations

from peewee import DatabaseProxy
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from qrq import pg_errors

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
}

# Pooled: a web request borrows an open connection instead of opening and closing
# the file each time (a third of a token check's cost). init_db empties the pool,
# so nothing is open when a server forks its workers.
MAX_CONNECTIONS = 64
STALE_SECONDS = 600

app_db = DatabaseProxy()
# Unbound until init_db: "is it closed?" and "is it bound?" answer before start-up too.
app_db.initialize(PooledSqliteDatabase(None, max_connections=MAX_CONNECTIONS,
                                       stale_timeout=STALE_SECONDS))


def sqlite_database(path: str, busy_timeout: float) -> PooledSqliteDatabase:
    # The pool's own "timeout" is how long to wait for a free connection; a pooled
    # connection serves one thread at a time, but not always the same thread.
    return PooledSqliteDatabase(
        path, max_connections=MAX_CONNECTIONS, stale_timeout=STALE_SECONDS,
        timeout=busy_timeout, check_same_thread=False,
        pragmas={**PRAGMAS, "busy_timeout": int(busy_timeout * 1000)})


class PostgresAppDatabase(PooledPostgresqlDatabase):
    """peewee's pool, checking a borrowed connection without a round trip.

    peewee asks an idle connection ``SELECT 1`` each time it lends it (a round trip
    per request, one in nine of a POST's). A connection the server has ended (a
    restart, ``pg_terminate_backend``) has its goodbye or its EOF waiting on the
    socket, and an idle healthy one has nothing: only then is it asked.
    """

    def _is_closed(self, conn) -> bool:
        if conn.closed:
            return True
        if pg_errors.quiet(conn):
            return False
        return super()._is_closed(conn)  # rolls back, or asks SELECT 1


def postgres_database(url: str, busy_timeout: float) -> PostgresAppDatabase:
    # psycopg 3 (peewee picks it when psycopg2 is absent; asked for explicitly here).
    # connect_timeout: an unreachable server fails a request in seconds, not minutes.
    return PostgresAppDatabase(
        url, max_connections=MAX_CONNECTIONS, stale_timeout=STALE_SECONDS,
        timeout=busy_timeout, prefer_psycopg3=True,
        connect_timeout=max(1, int(busy_timeout)))


def sql(text: str) -> str:
    """*text* (written with ``?`` placeholders, no literal ``%``) in the bound
    database's placeholder style."""
    return text if app_db.param == "?" else text.replace("?", app_db.param)
