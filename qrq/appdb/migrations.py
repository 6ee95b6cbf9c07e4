"""Versions of the app database's schema: numbered steps, applied in order, once.

``app_schema_version`` holds one row per step applied. A database made before the
steps existed (an old ``app.db``) has the tables of step 1 already; that step creates
only what is missing, so such a file is brought under versioning by applying it.
A database whose version is newer than this qrq knows is refused, never written.
Add a step by appending a function to ``STEPS``; never change a released one.
"""

from __future__ import annotations

import time

from peewee import Database, PostgresqlDatabase

from qrq.appdb.models import MODELS
from qrq.errors import QrqError

TABLE = "app_schema_version"


class SchemaTooNew(QrqError):
    """The app database was migrated by a newer qrq than this one."""

    status = 503
    code = "schema_too_new"


def _create_tables(db: Database) -> None:
    """Users, templates, dashboard sessions, the log-in throttle."""
    db.create_tables(MODELS, safe=True)


STEPS = (_create_tables,)
LATEST = len(STEPS)


def _ensure_table(db: Database) -> None:
    db.execute_sql(f"create table if not exists {TABLE} ("
                   " version integer primary key, applied_at double precision not null)")


def current_version(db: Database) -> int:
    """The newest step applied to *db* (0: none, or no version table yet)."""
    if TABLE not in db.get_tables():
        return 0
    row = db.execute_sql(f"select max(version) from {TABLE}").fetchone()
    return row[0] or 0


def check(db: Database) -> int:
    """*db*'s version, after checking this qrq can use it.

    :raises SchemaTooNew: it was migrated by a newer qrq.
    """
    version = current_version(db)
    if version > LATEST:
        raise SchemaTooNew(
            f"the app database is at schema version {version}, this qrq knows up to "
            f"{LATEST}: upgrade qrq (never run an older qrq on a migrated database)")
    return version


def _is_postgres(db: Database) -> bool:
    return isinstance(getattr(db, "obj", db), PostgresqlDatabase)  # through the proxy


# Any fixed number: the key of the PostgreSQL advisory lock held while migrating.
_LOCK_KEY = 0x71727161  # "qrqa"


def migrate(db: Database) -> list[int]:
    """Apply the steps *db* lacks, each in its own transaction; return their numbers.

    One process migrates at a time (several web workers or hosts may start at once):
    SQLite's write lock, PostgreSQL's advisory lock.

    :raises SchemaTooNew: *db* is newer than this qrq.
    """
    applied = []
    postgres = _is_postgres(db)
    while True:
        with db.atomic() if postgres else db.atomic("IMMEDIATE"):
            if postgres:
                db.execute_sql(f"select pg_advisory_xact_lock({_LOCK_KEY})")
            _ensure_table(db)
            version = check(db)
            if version >= LATEST:
                return applied
            STEPS[version](db)
            db.execute_sql(f"insert into {TABLE} (version, applied_at) values "
                           f"({version + 1}, {time.time()!r})")
            applied.append(version + 1)
