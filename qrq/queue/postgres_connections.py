"""PostgreSQL connections that take the SQL qrq writes for SQLite, and the queue's pool.

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
from qrq.queue.pg_dialect import translate

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

# During an outage, a process tries a connection of its own at most this often (seconds).
RETRY_EVERY = 1.0
_INHERITED = []  # pools a forked child must neither use nor close (their sockets are the parent's)


def _unavailable(exc: BaseException) -> bool:
    """Whether *exc* means the server cannot be reached (down, restarting, the
    connection dropped), as opposed to an error in a statement."""
    return isinstance(exc, (psycopg_pool.PoolTimeout, psycopg.errors.AdminShutdown,
                            psycopg.errors.CannotConnectNow)) or (
        isinstance(exc, psycopg.OperationalError)
        and not isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable))


def _unreachable(exc: psycopg.Error) -> bool:
    """Whether a failed connection attempt means no server to talk to (refused, timed
    out, shutting down or starting up), not one that answered and said no (too many
    connections, a login refused): the pool may still hold connections that work."""
    if exc.sqlstate is not None:
        return exc.sqlstate.startswith(("08", "57P"))
    # libpq gives a failed attempt no SQLSTATE: a server that answered sent a FATAL line
    # ("too many connections for role", "password authentication failed"), unless it
    # was only starting up or shutting down ("the database system is ...").
    text = str(exc)
    return "FATAL:" not in text or "the database system is" in text


def _rolled_back(exc: BaseException) -> bool:
    """Whether the server ended a transaction to break a deadlock or a serialization
    conflict (SQLSTATE class 40)."""
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")


class ServerDown(BaseException):
    """A lent connection was dead and the server refuses new ones: the pool's check
    raises this to end the wait at once. (psycopg_pool re-raises a BaseException from
    a check; after an Exception it waits its whole timeout for a replacement.)"""

    def __init__(self, refused: psycopg.Error):
        super().__init__(refused)
        self.refused = refused


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
        self._back_lock = threading.Lock()
        self._next_try = 0.0  # monotonic time of the next direct try during an outage
        self._outage = ""  # what the last try found
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
        costs one poll(2)): after a restart every idle one is dead, and the first
        request would get one (a 503). On the first dead one, all of them go at once
        (a round trip each), and the pool waits about a second before it lends again,
        unless the server refuses a connection of our own too: then it is down, and
        the use fails now instead of waiting the pool's timeout for a replacement."""
        if pg_errors.quiet(conn):
            return
        try:
            conn.execute("select 1")
        except psycopg.Error as exc:
            pool = self._pool  # (None while reset_connections replaces it)
            if pool is not None:
                pool.check()  # the others died with it: not one failed try each
            refused = self._connect_directly()
            if refused is not None and _unreachable(refused):
                raise ServerDown(refused) from exc
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
        if self._down_since is not None:
            self._try_again()
        try:
            with self.pool.connection() as conn:
                yield conn
        except ServerDown as down:
            raise self._went_down(down.refused) from down.refused
        except Exception as exc:
            if _rolled_back(exc):
                # The server is there, and the request or job may simply try again.
                raise Unavailable(f"the queue database ended a transaction: "
                                  f"{one_line(exc, self.url)}; try again") from exc
            if _unavailable(exc):
                raise self._went_down(exc) from exc
            raise

    def _went_down(self, exc: BaseException) -> Unavailable:
        """Note the outage (the pool drops its dead connections now, not one per use).
        A pool that lent nothing in time while the server takes a connection is busy,
        not down."""
        if isinstance(exc, psycopg_pool.PoolTimeout) and self._connect_directly() is None:
            return Unavailable(f"the queue database is busy: no pooled connection was "
                               f"free within {self._timeout:g} s")
        if self._down_since is None:
            self._down_since = time.time()
        with contextlib.suppress(Exception):
            self.pool.check()
        self._outage = ("the queue database cannot be reached: "
                        f"{one_line(exc, self.url)}")
        return Unavailable(self._outage)

    def _connect_directly(self) -> psycopg.Error | None:
        """Open and close one connection outside the pool; the error, if it failed."""
        try:
            connect_once(self.url, self._timeout)
        except psycopg.Error as exc:
            return exc
        return None

    def _try_again(self) -> None:
        """During an outage, a use tries one connection of its own (at most one a
        second per process; the uses between fail at once): a stopped server refuses
        it at once, where the pool would wait its whole timeout each time. Once one
        works, a fresh pool lends at once, where the old one would first wait out its
        reconnect backoff (up to tens of seconds).

        :raises Unavailable: the server still cannot be reached.
        """
        now = time.monotonic()
        if now < self._next_try:
            raise Unavailable(self._outage)
        self._next_try = now + RETRY_EVERY
        failed = self._connect_directly()
        if failed is not None:
            self._outage = ("the queue database cannot be reached: "
                            f"{one_line(failed, self.url)}")
            raise Unavailable(self._outage) from failed
        with self._back_lock:
            if self._down_since is None:
                return  # another thread saw it back first
            self._down_since = None
            old = self._take_pool()
        if old is not None:
            # Callers still waiting on it get a connection or their timeout first.
            closing = threading.Timer(self._timeout, old.close)
            closing.daemon = True
            closing.start()
        logger.warning("the queue database is reachable again",
                       extra={"database_reachable": True})

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
        pool = self._take_pool()
        if pool is not None:
            pool.close()

    def _take_pool(self) -> psycopg_pool.ConnectionPool | None:
        """This process's pool, taken out of use (a new one opens on next use); None
        when there is none, or when it was inherited: a forked child must not close
        its parent's pool (its sockets are the parent's), so it is kept, unused."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid != os.getpid():
            _INHERITED.append(pool)
            return None
        return pool

    def is_full(self) -> bool:
        return False  # the server's disk is the operator's to watch

    def moved_away(self) -> bool:
        return False  # (a SQLite queue moves here)

    def wal_size(self) -> int:
        return 0  # the server checkpoints its own WAL


def where(url: str) -> str:
    """*url* without its password, for messages: ``user@host:port/dbname``."""
    if pg_errors.url_mistake(url) is not None:
        return "QRQ_DATABASE_URL (not a valid PostgreSQL URL)"
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

    :raises Unavailable: with libpq's reason on one line (never the password).
    """
    mistake = pg_errors.url_mistake(url)
    if mistake is not None:
        raise Unavailable("cannot open the queue database: QRQ_DATABASE_URL is not a "
                          f"valid PostgreSQL URL: {mistake}")
    try:
        connect_once(url, timeout)
    except psycopg.Error as exc:
        raise Unavailable(f"cannot open the queue database {where(url)}: "
                          f"{one_line(exc, url)}") from None


def connect_once(url: str, timeout: float) -> None:
    """Open and close one connection to *url*, outside any pool.

    :raises psycopg.Error: it failed (libpq's reason).
    """
    psycopg.connect(url, connect_timeout=max(2, int(timeout))).close()


def as_text(key) -> str:
    """A kv key as text (huey gives bytes or str)."""
    return key.decode() if isinstance(key, bytes) else key


def one_line(exc: BaseException, url: str) -> str:
    """psycopg's message about *url*, which may span lines (libpq's hints), as one line
    without the password (libpq quotes the part of a URL it cannot parse)."""
    if pg_errors.url_mistake(url) is not None:
        return pg_errors.reason(exc, url)
    return pg_errors.redact(" ".join(str(exc).split()), url) or type(exc).__name__
