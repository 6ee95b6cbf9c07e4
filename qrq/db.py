"""The app database (users, templates): peewee with deferred initialisation.

``app_db`` is created unbound so modules can declare models at import time; the
web app, the CLI and the tasks bind it to ``<data>/app.db`` with :func:`init_db`.
"""

from __future__ import annotations

from pathlib import Path

from peewee import SqliteDatabase

PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
}

app_db = SqliteDatabase(None)


def init_db(path: Path, busy_timeout: float = 10.0, create: bool = True) -> SqliteDatabase:
    """Bind ``app_db`` to *path* and create missing tables."""
    from qrq.models import MODELS  # models import app_db from here

    path.parent.mkdir(parents=True, exist_ok=True)
    if not app_db.is_closed():
        app_db.close()
    app_db.init(str(path), pragmas=PRAGMAS, timeout=busy_timeout)
    if create:
        with app_db.connection_context():
            app_db.create_tables(MODELS, safe=True)
    return app_db
