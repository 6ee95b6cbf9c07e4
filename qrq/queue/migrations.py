"""Versions of the queue database's schema: numbered steps, applied in order, once.

``queue_schema_version`` holds one row per step applied (the same shape as the app
database's ``app_schema_version``, :mod:`qrq.appdb.migrations`). Step 1 is the
schema as it was when versions began; a database made before them (an old
``queue.db``, with or without the columns added since) is brought to it by applying
it, as it only adds what is missing. A database whose version is newer than this
qrq knows is refused, never written: an older qrq must not run on a migrated one.

The storage applies missing steps when it opens (one process at a time: SQLite's
write lock, a PostgreSQL advisory lock), then the ``create ... if not exists`` of
every table in :mod:`qrq.queue.schema` (a new table needs no step). ``qrq migrate``
does the same on demand and says what it applied. Add a step by appending a
function to ``STEPS``; never change a released one.
"""

from __future__ import annotations

import re
import time

from qrq.errors import QrqError
from qrq.queue import schema

TABLE = "queue_schema_version"


class SchemaTooNew(QrqError):
    """The queue database was migrated by a newer qrq than this one."""

    status = 503
    code = "schema_too_new"


def _step_1(storage, curs) -> None:
    """The schema when versions began: huey's tables with the lease columns and every
    table of qrq's; the columns an older file lacks are added."""
    for sql in (*schema.HUEY, *schema.QUEUE_DDL):
        curs.execute(storage.schema_sql(sql))
    for table, columns in {**schema.ADDED_COLUMNS}.items():
        have = storage.table_columns(curs, table)
        for column in columns:
            if column.split()[0] not in have:
                curs.execute(storage.schema_sql(f"alter table {table} add column {column}"))
    for sql in schema.LATE_DDL:
        curs.execute(storage.schema_sql(sql))
    # huey's pre-2.x index, replaced by task_queue_priority_id.
    curs.execute("drop index if exists task_priority_id")


def _step_2(storage, curs) -> None:
    """The job-deletion triggers go: retention deletes a job's rows in other tables
    itself (schema.JOB_DEPENDENTS), the same way on both databases."""
    if storage.database == "sqlite":
        for name in ("batch_job_deleted", "analytics_job_deleted", "webhook_job_deleted"):
            curs.execute(f"drop trigger if exists {name}")


def _step_3(storage, curs) -> None:
    """Consumers record their host's role: the job types they take and exclude."""
    have = storage.table_columns(curs, "consumer")
    for column in ("job_types", "exclude_job_types"):
        if column not in have:
            curs.execute(f"alter table consumer add column {column} text")


STEPS = (_step_1, _step_2, _step_3)
LATEST = len(STEPS)


# What a statement of schema.QUEUE_DDL creates or drops.
_OBJECT = re.compile(r"(create (?:unique )?(?:table|index)|drop index) if (?:not )?exists (\w+)")


def _changes(storage, curs) -> list[str]:
    """The statements of ``schema.QUEUE_DDL`` that change something: a table or index
    to create that is missing, an index to drop that is there. Every process that
    opens the queue runs this, and on PostgreSQL ``create index if not exists`` locks
    its table even when the index exists: run during a job's writes (a ``qrq``
    command), it deadlocked with them."""
    have = storage.schema_names(curs)
    changes = []
    for sql in schema.QUEUE_DDL:
        found = _OBJECT.match(sql)
        if found is None or (found[2] in have) == found[1].startswith("drop"):
            changes.append(sql)
    return changes


def _version(curs) -> int:
    curs.execute(f"select max(version) from {TABLE}")
    return curs.fetchone()[0] or 0


def _refuse_newer(version: int) -> None:
    if version > LATEST:
        raise SchemaTooNew(
            f"the queue database is at schema version {version}, this qrq knows up to "
            f"{LATEST}: upgrade qrq (an older qrq must not run on a migrated database)")


def current_version(storage) -> int:
    """The newest step applied to *storage*'s database (0: none)."""
    with storage.db() as curs:
        if TABLE not in storage.schema_names(curs):
            return 0
        return _version(curs)


def migrate(storage) -> list[int]:
    """Apply the steps *storage*'s database lacks, each in its own transaction, then
    create any table added since; return the numbers of the steps applied.

    :raises SchemaTooNew: the database is newer than this qrq.
    """
    applied = []
    while True:
        with storage.db(commit=True) as curs:
            storage.lock_schema(curs)
            curs.execute(f"create table if not exists {TABLE} ("
                         " version integer primary key, applied_at double precision not null)")
            version = _version(curs)
            _refuse_newer(version)
            if version >= LATEST:
                for sql in _changes(storage, curs):
                    curs.execute(storage.schema_sql(sql))
                return applied
            STEPS[version](storage, curs)
            curs.execute(f"insert into {TABLE} (version, applied_at) values (?, ?)",
                         (version + 1, time.time()))
            applied.append(version + 1)
