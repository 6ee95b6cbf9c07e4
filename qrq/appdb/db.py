"""The app database (users, templates, sessions, throttle): binding and probing.

``app_db`` (in :mod:`qrq.appdb.database`) is created unbound so the models can be
declared at import time; the web app, the CLI and the tasks bind it to
``<data>/app.db`` with :func:`init_db`.
"""

from __future__ import annotations

from pathlib import Path

from peewee import OperationalError
from playhouse.pool import PooledSqliteDatabase

from qrq.appdb.database import PRAGMAS, app_db
from qrq.appdb.models import ADDED_COLUMNS, MODELS

__all__ = ["PRAGMAS", "app_db", "init_db", "probe"]


def init_db(path: Path, busy_timeout: float = 10.0, create: bool = True) -> PooledSqliteDatabase:
    """Bind ``app_db`` to *path* and create missing tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not app_db.deferred:  # bound before (tests and tasks rebind it)
        app_db.close_all()
    # The pool's own "timeout" is how long to wait for a free connection; a pooled
    # connection serves one thread at a time, but not always the same thread.
    app_db.init(str(path), timeout=busy_timeout, check_same_thread=False,
                pragmas={**PRAGMAS, "busy_timeout": int(busy_timeout * 1000)})
    if create:
        with app_db.connection_context():
            app_db.create_tables(MODELS, safe=True)
            _add_missing_columns()
        app_db.close_all()
    return app_db


def _add_missing_columns() -> None:
    """Give a file made by an older qrq the columns added since (``ADDED_COLUMNS``)."""
    for model, columns in ADDED_COLUMNS.items():
        table = model._meta.table_name
        present = {column.name for column in app_db.get_columns(table)}
        for name, ddl in columns:
            if name in present:
                continue
            try:
                app_db.execute_sql(f'alter table "{table}" add column {name} {ddl}')
            except OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise


def probe() -> None:
    """Open the app database and read the user table once (health checks).

    :raises peewee.DatabaseError: it cannot be opened or read (missing, corrupt, locked).
    """
    with app_db.connection_context():
        app_db.execute_sql('select 1 from "user" limit 1').fetchall()
