"""The app database handle: peewee, created unbound (deferred initialisation).

Models declare themselves against ``app_db`` at import time; :func:`qrq.appdb.db.init_db`
binds it to ``<data>/app.db`` when the web app, the CLI or a task starts.
"""

from __future__ import annotations

from playhouse.pool import PooledSqliteDatabase

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
}

# Pooled: a web request borrows an open connection instead of opening and closing
# the file each time (a third of a token check's cost). init_db empties the pool,
# so nothing is open when a server forks its workers.
app_db = PooledSqliteDatabase(None, max_connections=64, stale_timeout=600)
