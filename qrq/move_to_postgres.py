"""Moving an installation from its SQLite files to PostgreSQL (``qrq migrate-to-postgres``).

Every row of ``queue.db`` (queue, schedule, job records, batches, caches, alerts,
webhooks) and ``app.db`` (users, templates, sessions) is copied into the tables the
PostgreSQL schema has, in one transaction: a failure leaves the target as empty as
it was. Leases are cleared (a row leased by a consumer that is gone is simply
queued again), run locks are not carried over, identity sequences are set past the
copied ids, and the rows of every table are counted on both sides.

The consumers must be stopped (a fresh heartbeat refuses the move). The SQLite files
are only read, but for triggers that refuse new jobs in ``queue.db`` from before the
copy (:func:`freeze`: a web app left running answers 503 instead of queuing a job that
would be lost); a note beside them (:func:`mark_moved`) makes qrq refuse them without
``QRQ_DATABASE_URL`` from then on, so a host whose settings were left behind does not
run their queued jobs a second time. Going back is deleting the note (a process that
opens the files then drops the triggers).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from qrq.errors import Conflict, QrqError
from qrq.queue import moved

# Tables whose rows are not carried: schema bookkeeping (the target has its own),
# run locks (of processes that are gone), SQLite's own.
NOT_COPIED = {"app_schema_version", "schema_version", "queue_schema_version",
              "maintenance_lock", "sqlite_sequence", "sqlite_stat1"}
# Rows the target may hold before the move, made by merely looking at it (``qrq status``
# evaluates the alerts; the first process to open it records its key, and a web app its
# artifact store): the copy replaces them.
REPLACED = {"alert", "queue_key", "artifact_store"}
# Columns reset on the way: leases of consumers that are gone.
CLEARED = {"task": ("lease_until", "lease_owner")}
CHUNK = 1000


def _sqlite(path: Path, write: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode={'rw' if write else 'ro'}", uri=True,
                           timeout=10)


def live_consumers(queue_db: Path, fresh_seconds: float,
                   now: float | None = None) -> list[str]:
    """Consumers whose heartbeat in *queue_db* is younger than *fresh_seconds*."""
    now = time.time() if now is None else now
    with _sqlite(queue_db) as conn:
        has = conn.execute("select 1 from sqlite_master where name = 'consumer'").fetchone()
        rows = conn.execute("select host, pid, heartbeat_at from consumer "
                            "where heartbeat_at > ?", (now - fresh_seconds,)).fetchall() \
            if has else []
    conn.close()
    return [f"{host} pid {pid} ({now - beat:.0f}s ago)" for host, pid, beat in rows]


def _sqlite_tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [name for name, in conn.execute(
        "select name from sqlite_master where type = 'table' order by name")]
    return {t: [row[1] for row in conn.execute(f'pragma table_info("{t}")')] for t in tables}


def _target_columns(pg: psycopg.Connection) -> dict[str, dict[str, str]]:
    """``{table: {column: data type}}`` of the target schema."""
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in pg.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_schema = current_schema() order by table_name, ordinal_position"):
        found.setdefault(table, {})[column] = kind
    return found


def _convert(kind: str) -> Callable[[Any], Any]:
    """SQLite's value as the target column's type wants it (SQLite has no booleans and
    keeps any type in any column)."""
    if kind == "boolean":
        return lambda v: None if v is None else bool(v)
    if kind == "bytea":
        return lambda v: v.encode() if isinstance(v, str) else v
    if kind in ("text", "character varying"):
        return lambda v: v if v is None or isinstance(v, str) else str(v)
    return lambda v: v


def _count(pg: psycopg.Connection, table: str) -> int:
    return pg.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))
                      ).fetchone()[0]


def holding_data(pg: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    """Those of *tables* that hold an installation's rows: not only the rows that merely
    opening the database makes (:data:`REPLACED`) or bookkeeping (:data:`NOT_COPIED`)."""
    return sorted(t for t in tables if t not in NOT_COPIED | REPLACED and _count(pg, t))


def holds_installation(url: str) -> bool:
    """Whether qrq's schema in *url*'s database holds an installation's rows (a move
    or a restore into it would replace them)."""
    with psycopg.connect(url) as pg:
        return bool(holding_data(pg, _target_columns(pg)))


def check_empty(pg: psycopg.Connection, tables: dict[str, dict[str, str]]) -> None:
    """:raises Conflict: a qrq table of the target already holds rows."""
    full = holding_data(pg, tables)
    if full:
        raise Conflict("the PostgreSQL database is not empty (rows in "
                       f"{', '.join(full)}); migrate into an empty one")


def _copy_table(conn: sqlite3.Connection, pg: psycopg.Connection, table: str,
                columns: list[str], target: dict[str, str]) -> int:
    shared = [c for c in columns if c in target]
    cleared = set(CLEARED.get(table, ()))
    converters = [_convert(target[c]) for c in shared]
    insert = sql.SQL("insert into {} ({}) values ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, shared)),
        sql.SQL(", ").join(sql.Placeholder() * len(shared)))
    select = "select " + ", ".join(f'"{c}"' for c in shared) + f' from "{table}"'
    copied = 0
    rows = conn.execute(select)
    with pg.cursor() as curs:
        while batch := rows.fetchmany(CHUNK):
            curs.executemany(insert, [
                tuple(None if col in cleared else convert(value)
                      for col, convert, value in zip(shared, converters, row, strict=True))
                for row in batch])
            copied += len(batch)
    return copied


def _advance_identities(pg: psycopg.Connection) -> None:
    """Set each identity (or serial) sequence past the largest copied id."""
    for table, column in pg.execute(
            "select table_name, column_name from information_schema.columns "
            "where table_schema = current_schema() and (is_identity = 'YES' "
            "or column_default like 'nextval(%')").fetchall():
        pg.execute(sql.SQL(
            "select setval(pg_get_serial_sequence({qualified}, {col}), "
            "coalesce((select max({ident}) from {tbl}), 0) + 1, false)").format(
            qualified=sql.Literal(f'"{table}"'), col=sql.Literal(column),
            ident=sql.Identifier(column), tbl=sql.Identifier(table)))


def move(sources: list[Path], url: str,
         report: Callable[[str, int], None] = lambda table, rows: None) -> dict[str, int]:
    """Copy every table of the SQLite files *sources* into *url* (its schema already
    made); return ``{table: rows}``, each count checked on the target.

    :raises Conflict: the target holds rows already.
    :raises QrqError: a table with rows has no counterpart in PostgreSQL, or the
        counts differ (nothing was copied then).
    """
    with psycopg.connect(url) as pg:
        tables = _target_columns(pg)
        check_empty(pg, tables)
        for table in sorted(REPLACED & set(tables)):  # even where the source has none
            pg.execute(sql.SQL("delete from {}").format(sql.Identifier(table)))
        copied: dict[str, int] = {}
        for path in sources:
            conn = _sqlite(path)
            try:
                for table, columns in _sqlite_tables(conn).items():
                    if table in NOT_COPIED:
                        continue
                    if table not in tables:
                        if conn.execute(f'select count(*) from "{table}"').fetchone()[0]:
                            raise QrqError(f"{path.name}: table {table} has rows but no "
                                           "table in PostgreSQL to go to; nothing was copied")
                        continue
                    copied[table] = copied.get(table, 0) + _copy_table(
                        conn, pg, table, columns, tables[table])
                    report(table, copied[table])
            finally:
                conn.close()
        wrong = {t: (n, _count(pg, t)) for t, n in copied.items() if _count(pg, t) != n}
        if wrong:
            raise QrqError("row counts differ after the copy (SQLite, PostgreSQL): "
                           f"{wrong}; nothing was copied")
        _advance_identities(pg)
    return copied


def freeze(queue_db: Path) -> None:
    """Refuse new jobs in *queue_db* from now on (:mod:`qrq.queue.moved`), before it is
    copied: a job queued by a process still open on it would be lost."""
    conn = _sqlite(queue_db, write=True)
    try:
        moved.freeze(conn)
    finally:
        conn.close()


def thaw(queue_db: Path) -> None:
    """Undo :func:`freeze` (the move failed)."""
    conn = _sqlite(queue_db, write=True)
    try:
        with conn:
            moved.thaw(conn)
    finally:
        conn.close()


def mark_moved(marker: Path, url: str) -> None:
    """Leave the note that the SQLite files beside *marker* moved to *url* (named
    without its password): its first line completes "<data dir> was ..."."""
    where = conninfo.conninfo_to_dict(url)
    target = f"{where.get('dbname', '')} on {where.get('host', 'localhost')}"
    marker.write_text(
        f"moved to PostgreSQL ({target}) at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} by qrq migrate-to-postgres\n"
        "Without QRQ_DATABASE_URL, qrq refuses the SQLite files here: their queued jobs\n"
        "would run a second time, and nothing done on PostgreSQL is in them. Delete this\n"
        "file to go back to them anyway.\n")
