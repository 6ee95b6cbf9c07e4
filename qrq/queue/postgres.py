"""PostgreSQL connections that take the SQL qrq writes for SQLite.

qrq keeps one SQL text per statement for both databases (see docs/architecture.md,
"Two databases"). This module is the PostgreSQL side of what still differs at the
driver level: ``?`` placeholders become ``%s`` and SQLite's column types in DDL become
PostgreSQL's (:mod:`qrq.queue.pg_dialect`), and ``numeric`` results (``sum`` and ``avg``
of integers) come back as Python numbers, not ``Decimal``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping

import psycopg
import psycopg_pool
from huey.storage import BaseSqlStorage, SqliteStorage
from psycopg.adapt import Loader

from qrq import pg_errors
from qrq.errors import Unavailable
from qrq.queue import jobs, postgres_submit, wakeup
from qrq.queue.pg_dialect import ddl, translate
from qrq.queue.postgres_end import OneTripEnd
from qrq.queue.roles import type_filter

logger = logging.getLogger("qrq.queue.storage")


class QmarkCursor(psycopg.Cursor):
    """A cursor that takes ``?`` placeholders, as sqlite3's does."""

    def execute(self, query, params=None, **kwargs):
        if params:
            query = translate(query, isinstance(params, Mapping))
        return super().execute(query, params or None, **kwargs)

    def executemany(self, query, params_seq, **kwargs):
        params_seq = list(params_seq)
        named = bool(params_seq) and isinstance(params_seq[0], Mapping)
        return super().executemany(translate(query, named), params_seq, **kwargs)


class _NumberLoader(Loader):
    """``numeric`` as int when whole, else float: ``sum(integer)`` is numeric here and
    a ``Decimal`` would not serialise to JSON."""

    def load(self, data):
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


def configure(conn: psycopg.Connection) -> None:
    """What every qrq connection needs, whether opened alone or by a pool."""
    conn.adapters.register_loader("numeric", _NumberLoader)


def connect(url: str, **kwargs) -> psycopg.Connection:
    """One connection to *url* with ``?`` placeholders (not in autocommit mode unless asked)."""
    conn = psycopg.connect(url, cursor_factory=QmarkCursor, **kwargs)
    configure(conn)
    return conn


def pool(url: str, min_size: int = 1, max_size: int = 8, **kwargs) -> psycopg_pool.ConnectionPool:
    """A pool of such connections, opened (its first connection is made at once, so a
    wrong URL fails here)."""
    return psycopg_pool.ConnectionPool(
        url, min_size=min_size, max_size=max_size, open=True, configure=configure,
        kwargs={"cursor_factory": QmarkCursor}, **kwargs)


# -- the queue's connections -----------------------------------------------------------

_INHERITED = []  # pools a forked child must neither use nor close (their sockets are the parent's)


def _unavailable(exc: BaseException) -> bool:
    """Whether *exc* means the server cannot be reached (down, restarting, the
    connection dropped), as opposed to an error in a statement."""
    return isinstance(exc, (psycopg_pool.PoolTimeout, psycopg.errors.AdminShutdown,
                            psycopg.errors.CannotConnectNow)) or (
        isinstance(exc, psycopg.OperationalError)
        and not isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable))


class PostgresConnections(SqliteStorage):
    """The connection side of huey's SQL storage, on PostgreSQL: a pool per process,
    autocommit reads, one transaction per write, and a server that cannot be reached
    reported as :class:`~qrq.errors.Unavailable` (the pool reconnects by itself).

    huey's ``SqliteStorage`` methods for the result store, the schedule and counters
    are plain SQL that PostgreSQL accepts through :class:`QmarkCursor`; the lease
    layer (:class:`qrq.queue.storage.LeasedStorage`) replaces the two that are not.
    """

    to_blob = bytes

    def __init__(self, name="huey", url="", timeout=5.0, **kwargs):
        self.url = url
        self.filename = None
        self._timeout = timeout
        self._pool = None
        self._pool_pid = None
        self._pool_lock = threading.Lock()
        # "normal" (the consumer's): commits do not wait for the WAL flush (see QrqConsumer).
        self.synchronous = None
        self.full_since = None
        self._down_since = None
        check_reachable(url, timeout)
        BaseSqlStorage.__init__(self, name, **kwargs)

    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        if self._pool is None or self._pool_pid != os.getpid():
            with self._pool_lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    if self._pool is not None:
                        _INHERITED.append(self._pool)
                    self._pool = psycopg_pool.ConnectionPool(
                        self.url, min_size=1, max_size=16, open=True, timeout=self._timeout,
                        configure=self._configure, check=self._check, name=f"qrq-{self.name}",
                        kwargs={"cursor_factory": QmarkCursor, "autocommit": True})
                    self._pool_pid = os.getpid()
        return self._pool

    def _check(self, conn: psycopg.Connection) -> None:
        """Try a connection the server may have ended before lending it (a quiet one
        costs nothing): after a restart every idle one is dead, and the first request
        would get one (a 503). On the first dead one, all of them go at once."""
        if pg_errors.quiet(conn):
            return
        try:
            conn.execute("select 1")
        except psycopg.Error:
            self._pool.check()  # the others died with it: not one failed try each
            raise

    def _configure(self, conn: psycopg.Connection) -> None:
        configure(conn)
        if self.synchronous is not None and self.synchronous.lower() in ("normal", "off"):
            conn.execute("set synchronous_commit = off")

    @contextlib.contextmanager
    def db(self, commit=False, close=False):
        with self.connection() as conn, conn.transaction() if commit \
                else contextlib.nullcontext(), conn.cursor() as cursor:
            yield cursor

    @contextlib.contextmanager
    def connection(self):
        """A pooled connection (autocommit); an unreachable server raises Unavailable."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except Exception as exc:
            if _unavailable(exc):
                raise self._went_down(exc) from exc
            raise
        if self._down_since is not None:
            self._down_since = None
            logger.warning("the queue database is reachable again",
                           extra={"database_reachable": True})

    def _went_down(self, exc: BaseException) -> Unavailable:
        """Note the outage (the pool drops its dead connections now, not one per use)."""
        if self._down_since is None:
            self._down_since = time.time()
        with contextlib.suppress(Exception):
            self.pool.check()
        return Unavailable(f"the queue database cannot be reached: {one_line(exc)}")

    def sql(self, query, params=None, commit=False, results=False):
        with self.db(commit=commit) as curs:
            curs.execute(query, params or ())
            if results:
                return curs.fetchall()

    def _group_commit(self, write) -> None:
        # Concurrent commits share WAL flushes on the server: no grouping needed here.
        with self.db(commit=True) as curs:
            write(curs)

    def close(self):
        """Nothing per thread: the pool's connections serve every thread (see dispose)."""
        return False

    def reset_connections(self) -> None:
        """Close this process's pool; a new one (with the current settings) opens on
        next use."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    def is_full(self) -> bool:
        return False  # the server's disk is the operator's to watch

    def wal_size(self) -> int:
        return 0  # the server checkpoints its own WAL


def where(url: str) -> str:
    """*url* without its password, for messages: ``user@host:port/dbname``."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "QRQ_DATABASE_URL (not a valid PostgreSQL URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{parts.get('host', 'localhost')}{port}/{parts.get('dbname', '')}"


def check_reachable(url: str, timeout: float) -> None:
    """Connect once, so a wrong URL, a server that cannot be reached, a missing
    database or refused credentials is one clear error at start-up.

    :raises Unavailable: with libpq's reason on one line.
    """
    try:
        psycopg.connect(url, connect_timeout=max(2, int(timeout))).close()
    except psycopg.Error as exc:
        raise Unavailable(f"cannot open the queue database {where(url)}: "
                          f"{one_line(exc)}") from None


def _text(key) -> str:
    return key.decode() if isinstance(key, bytes) else key


def one_line(exc: BaseException) -> str:
    """psycopg's message, which may span lines (libpq's hints), as one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


class LeasedPostgresStorage(postgres_submit.OneTripSubmit, OneTripEnd, PostgresConnections):
    """The leased storage on PostgreSQL: what differs from SQLite, and only that."""

    database = "postgresql"
    # The server's clock, so hosts with skewed clocks agree on leases. Per statement
    # (not clock_timestamp(), which changes per row): a stable value can be an index
    # bound, and a statement is short.
    now_sql = "cast(extract(epoch from statement_timestamp()) as double precision)"
    skip_locked = " for update skip locked"
    for_update = " for update"

    def __init__(self, name="huey", url="", idle_poll=2.0, **kwargs):
        super().__init__(name, url=url, **kwargs)
        self.channel = f"qrq_{name}"
        self.idle_poll = idle_poll  # seconds: the fallback poll for lapsed leases
        self.stop_flag = None  # the consumer's (wait_for_wakeups)
        self.listener = wakeup.Listener(url, self.channel)

    def _lease(self, curs, owner: str, blocked: tuple[str, ...],
               head_unless: tuple[str, ...] = ()) -> tuple | None:
        """One statement: lease the best row no one holds (rows other workers are leasing
        are skipped, not waited for; nothing if it is of a *head_unless* type: see
        LeasedSqliteStorage._lease) and mark its job running."""
        curs.execute(
            f"with picked as materialized(select id {self._pick_sql(blocked)}{self.skip_locked}), "
            + self._lease_sql(f"from picked where task.id = picked.id"
                              f"{type_filter((), head_unless)}"),
            (*self._pick_params(blocked), self.lease_seconds, owner, *head_unless, owner,
             now := time.time()))
        row = curs.fetchone()
        return row and self._started(curs, row, owner, now)

    def _lease_rows(self, curs, ids: list[int]) -> list[tuple]:
        """Lease the rows *ids* (the pick locked them) and mark their jobs running, in
        one statement as :meth:`_lease` does for one row."""
        curs.execute("with " + self._lease_sql("where id = any(?)"),
                     (self.lease_seconds, self.owner, ids, self.owner, now := time.time()))
        leased = {found[0]: found for found in curs.fetchall()}
        return [self._started(curs, leased[row], self.owner, now) for row in ids]

    def _lease_sql(self, where: str) -> str:
        """The lease of the task rows *where* selects, and their jobs marked running (the
        parameters: the lease's seconds, its owner, *where*'s, the worker, the time), as
        CTEs. Every part sees the rows as they were before it: taken_from is the job's
        worker before it is marked running."""
        running = jobs.MARK_ALL_RUNNING_SQL.format("in (select job_id from leased)")
        return (f"leased as (update task set lease_until = {self.now_sql} + ?, "
                f"lease_owner = ? {where} returning task.id, task.data, task.job_id, "
                f"{jobs.TAKEN_FROM_SQL}), running as ({running}) "
                "select leased.id, data, leased.job_id, taken_from, attempts, started_at "
                "from leased left join running on running.id = leased.job_id")

    @staticmethod
    def _started(curs, leased: tuple, owner: str, now: float) -> tuple:
        """``(row, data, job_id, first)`` of a row the lease statement returned."""
        if leased[2] is None:
            return (*leased[:3], None)
        return (*leased[:3], jobs.attempt_started(curs, leased[2], owner, now, leased[3],
                                                  leased[4:]))

    def _lock_caps(self, curs) -> None:
        # Held to the commit: the next capped pick counts this one's lease.
        curs.execute("select pg_advisory_xact_lock(hashtext(?))", (f"qrq-caps:{self.name}",))

    def _lock_owner(self, curs, owner_id: int | None) -> None:
        # Held to the commit: the next submit of this owner counts this one's job.
        curs.execute("select pg_advisory_xact_lock(hashtext(?))", (f"qrq-owner:{owner_id}",))

    def _move_due(self, curs, due: tuple) -> int:
        # Several schedulers may run (every consumer's): a row moves once.
        curs.execute(
            "with moved as (delete from schedule where id in (select id from schedule "
            "where queue = ? and timestamp <= ? and job_id is not null"
            f"{self.skip_locked}) returning queue, data, priority, job_id, job_type, "
            "timestamp, id) insert into task (queue, data, priority, job_id, job_type) "
            "select queue, data, priority, job_id, job_type from moved order by timestamp, id",
            due)
        return curs.rowcount

    def _notify(self, curs) -> None:
        curs.execute("select pg_notify(?, '')", (self.channel,))

    def wait_for_wakeups(self, poll_interval: float | None, stop=None, workers: int = 1) -> None:
        self.blocking = True
        self.poll_interval = poll_interval or self.poll_interval
        self.stop_flag = stop

    def wakeups(self) -> int:
        return self.listener.heard

    def wait_for_work(self, heard: int, soon: bool = False) -> None:
        # The stop flag is set before stop_waiting's NOTIFY is sent: a worker that heard
        # that NOTIFY before its dequeue read *heard* sees the flag here.
        if self.blocking and not (self.stop_flag is not None and self.stop_flag.is_set()):
            self.listener.wait(heard, self.poll_interval if soon else self.idle_poll)

    def found_work(self, all_asked: bool) -> None:
        """Nothing to do: the enqueue's NOTIFY woke every idle worker."""

    def stop_waiting(self) -> None:
        """The consumer's stop flag is set: end the idle workers' waits at once, this
        process's by hand and the worker processes' by a NOTIFY (which makes other
        consumers' idle workers poll once). Sent from a thread of its own, so that a
        database that does not answer cannot hold up the stop: the waits then end
        within ``idle_poll`` seconds, as they would without it."""
        self.listener.wake()
        threading.Thread(target=self._notify_stop, name="qrq-stop-notify",
                         daemon=True).start()

    def _notify_stop(self) -> None:
        # This process's pool as it is: none made (a disposed storage stays closed), and
        # no outage noted (the storage's own statements report one).
        pool = self._pool
        if pool is None or self._pool_pid != os.getpid():
            return
        try:
            with pool.connection() as conn, conn.cursor() as curs:
                self._notify(curs)
        except Exception as exc:  # the waits end anyway, a little later
            logger.debug("could not wake the idle workers to stop: %s", one_line(exc))

    def dispose(self) -> None:
        """Done with this storage: its heartbeat, listener and connections stop."""
        self.stop_heartbeat()
        self.listener.stop()
        self.reset_connections()

    # huey passes result keys as bytes or str; the key column is text on both
    # databases, but only SQLite stores bytes in it as they come.

    def put_data(self, key, value, is_result=False):
        super().put_data(_text(key), value, is_result)

    def peek_data(self, key):
        return super().peek_data(_text(key))

    def pop_data(self, key):
        return super().pop_data(_text(key))

    def has_data_for_key(self, key):
        return super().has_data_for_key(_text(key))

    def put_if_empty(self, key, value, ttl=None):
        return super().put_if_empty(_text(key), value, ttl)

    def peek_many(self, keys):
        return super().peek_many([_text(key) for key in keys])

    # The schema (qrq.queue.migrations): SQLite's DDL with PostgreSQL's types.

    def initialize_schema(self):
        try:
            super().initialize_schema()
        except psycopg.errors.InsufficientPrivilege as exc:
            raise Unavailable(f"cannot create qrq's tables in {where(self.url)} (grant the "
                              f"user CREATE on its schema): {one_line(exc)}") from None

    def schema_sql(self, sql: str) -> str:
        return ddl(sql)

    def lock_schema(self, curs) -> None:
        curs.execute("select pg_advisory_xact_lock(hashtext('qrq-queue-schema'))")

    def tables(self, curs) -> set[str]:
        curs.execute("select table_name from information_schema.tables "
                     "where table_schema = current_schema()")
        return {name for name, in curs.fetchall()}

    def table_columns(self, curs, table: str) -> set[str]:
        curs.execute("select column_name from information_schema.columns "
                     "where table_schema = current_schema() and table_name = ?", (table,))
        return {name for name, in curs.fetchall()}
