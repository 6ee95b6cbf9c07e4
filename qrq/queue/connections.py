"""huey's SQLite storage made for threaded servers: a connection per thread, group
commits, and a full disk reported as :class:`~qrq.errors.StorageFull`.

huey shares one connection behind a lock, so in a threaded web server every
read waits behind any write. With WAL readers never wait for writers, so each
thread gets its own connection and reads take no lock. Writes still queue on a
process-wide lock: threads waiting in SQLite's busy handler would sleep in coarse
steps (up to 100 ms), a Python lock hands over at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
import weakref

from huey.storage import SqliteStorage

from qrq.errors import StorageFull
from qrq.queue import moved
from qrq.queue.poll_schedule import PollSchedule

logger = logging.getLogger("qrq.queue.storage")

# Less free space than this on the queue's file system counts as full (is_full):
# a WAL checkpoint or a burst of job records would fail on it.
FREE_SPACE_MIN = 1 << 20
# Bytes of WAL kept after a checkpoint resets it: a burst's WAL shrinks back.
JOURNAL_SIZE_LIMIT = 4 << 20
# The page size of a new queue file. A commit writes each page it changed, whole, to
# the WAL, and a job's state change touches about seven pages (its task row, its job
# row, an index page each): 2 KiB pages write 44% fewer bytes per job than SQLite's
# 4 KiB default (BENCHMARKS.md, "Drain") and leave rows of up to ~2 KB on their page.
# A file made earlier keeps its pages (SQLite changes them only by a VACUUM outside WAL).
PAGE_SIZE = 2048
# Seconds a writer's RESTART checkpoint (restart_wal_after_commit) waits for older
# readers while it holds the write lock; past that it gives up and a later commit retries.
WAL_RESTART_WAIT = 0.5
# Seconds a commit that finds the WAL past twice its limit waits for another process's
# checkpoint to finish, rather than write on.
WAL_RESTART_PATIENCE = 2.0
# Seconds a process's commits leave the WAL alone after a reader outlasted the wait
# (a backup, a long report): every commit would otherwise stall writers for the wait.
WAL_RESTART_BACKOFF = 1.0
# A process looks at the WAL's size (a stat, ~5% of a no-op job's CPU when done at every
# commit) at every this many commits; a job's commit adds ~16 KB, so the WAL passes its
# limit by a few of them at most.
WAL_LOOK_EVERY = 8

_NO_LOCK = contextlib.nullcontext()
_LIVE = weakref.WeakSet()
_INHERITED = []  # connections a forked child must neither use nor close


def _after_fork_in_child() -> None:
    # huey's consumer forks replacement workers from a parent whose threads (the
    # scheduler, heartbeats) use the storage: a child must not share the parent's
    # SQLite connection, nor inherit its lock in a held state.
    for storage in list(_LIVE):
        storage.lock = threading.Lock()
        storage._pending_lock = threading.Lock()
        storage._pending = []
        _INHERITED.append(storage._conns)
        storage._conns = threading.local()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _disk_full(exc: BaseException) -> bool:
    """Whether *exc* is SQLite's "database or disk is full" (SQLITE_FULL, from ENOSPC)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc))


class _PendingWrite:
    __slots__ = ("write", "done", "error")

    def __init__(self, write):
        self.write = write
        self.done = False
        self.error = None


class ThreadedSqliteStorage(SqliteStorage):
    """``SqliteStorage`` with a connection per thread, group commits and StorageFull;
    :class:`qrq.queue.sqlite_storage.LeasedSqliteStorage` adds the leases."""

    def __init__(self, name="huey", filename="huey.db", **kwargs):
        self._conns = threading.local()
        # SQLite's synchronous pragma for new connections; None keeps SQLite's
        # default, FULL (WAL fsyncs every commit). See QRQ_ENQUEUE_SYNC and QrqConsumer.
        self.synchronous = None
        self._pending = []  # writes waiting to share the next commit (_group_commit)
        self._pending_lock = threading.Lock()
        # When a statement of this process last failed for a full disk; None once a
        # commit succeeds again.
        self.full_since = None
        # Bytes of WAL past which this process's own commits checkpoint it (RESTART)
        # instead of SQLite's passive autocheckpoint; None keeps SQLite's. The consumer
        # sets it (QrqConsumer): see restart_wal_after_commit.
        self.wal_restart_bytes = None
        self._wal_restart_after = 0.0  # monotonic time; see WAL_RESTART_BACKOFF
        self._commits = 0  # see WAL_LOOK_EVERY
        # Held, after this process's own lock, by each write transaction: nothing, or a
        # lock the consumer's processes share (QrqConsumer), so they queue for SQLite's
        # write lock in the kernel instead of sleeping in SQLite's busy handler.
        self.writers = _NO_LOCK
        super().__init__(name, filename, **kwargs)
        _LIVE.add(self)

    # huey shares one connection behind a lock, so in a threaded web server every
    # read waits behind any write. With WAL readers never wait for writers, so
    # each thread gets its own connection and reads take no lock. Writes still
    # queue on a process-wide lock: threads waiting in SQLite's busy handler
    # would sleep in coarse steps (up to 100 ms), a Python lock hands over at once.

    def _set_journal_mode(self, conn):
        conn.execute(f"pragma page_size = {PAGE_SIZE}")  # no effect once the file has tables
        super()._set_journal_mode(conn)

    @property
    def conn(self):
        conn = getattr(self._conns, "conn", None)
        if conn is None:
            conn = self._conns.conn = self._create_connection()
            conn.execute(f"pragma journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            if self.wal_restart_bytes is not None:  # its commits checkpoint instead
                conn.execute("pragma wal_autocheckpoint = 0")
            if self.synchronous is not None:
                conn.execute(f"pragma synchronous = {self.synchronous}")
        return conn

    @contextlib.contextmanager
    def db(self, commit=False, close=False):
        if not commit:
            with self._transaction(False, close) as cursor:
                yield cursor
            return
        with self.lock, self.writers, self._transaction(True, close) as cursor:
            yield cursor

    @contextlib.contextmanager
    def _transaction(self, commit: bool, close: bool):
        """A cursor, in a transaction when *commit*; SQLite's "disk is full" (on any
        statement, the commit, or opening the connection) becomes :class:`StorageFull`."""
        try:
            conn = self.conn
            cursor = conn.cursor()
            try:
                if commit:
                    cursor.execute(self.begin_sql)
                yield cursor
                if commit:
                    conn.commit()
            except BaseException:  # an interrupted transaction must not stay open
                if commit:
                    conn.rollback()
                raise
            finally:
                cursor.close()
                if close:
                    self.close()
        except sqlite3.OperationalError as exc:
            raise self._full_or(exc) from exc
        except sqlite3.IntegrityError as exc:
            raise moved.refused(exc) from exc
        if commit and self.full_since is not None:
            self.full_since = None
            logger.warning("the queue database is writable again",
                           extra={"storage_writable": True})
        if commit and not close and self.wal_restart_bytes is not None:
            self.restart_wal_after_commit()

    def sql(self, query, params=None, commit=False, results=False):
        if commit:
            return super().sql(query, params, commit=True, results=results)
        # A read needs no lock and no transaction: huey reads the kv table three times
        # per job (revoke checks), and the context managers cost more than the query.
        try:
            cursor = self.conn.execute(query, params or ())
            try:
                return cursor.fetchall() if results else None
            finally:
                cursor.close()
        except sqlite3.OperationalError as exc:
            raise self._full_or(exc) from exc

    def _full_or(self, exc: sqlite3.OperationalError) -> Exception:
        """The error to raise for *exc*: StorageFull when the disk is full (noting since
        when), else *exc* itself."""
        if not _disk_full(exc):
            return exc
        if self.full_since is None:
            self.full_since = time.time()
        return StorageFull()

    def is_full(self) -> bool:
        """Whether the queue database cannot grow: a write of this process failed for
        lack of space and none has succeeded since, or its file system has less than
        :data:`FREE_SPACE_MIN` bytes free."""
        if self.full_since is not None:
            return True
        try:
            usage = shutil.disk_usage(os.path.dirname(os.path.abspath(self.filename)))
        except OSError:
            return False
        return usage.free < FREE_SPACE_MIN

    def checkpoint(self, mode: str = "truncate",
                   wait: float | None = None) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(MODE)``: copy the WAL into the database file (and with
        TRUNCATE or RESTART start it over); returns SQLite's (busy, WAL frames, copied).

        TRUNCATE holds the write lock while it waits for older readers; *wait* (seconds)
        bounds that wait instead of the busy timeout, so a long reader (a backup, a
        report) makes it give up (busy 1) rather than stall every writer.
        """
        conn = self.conn
        if wait is not None:
            conn.execute(f"pragma busy_timeout = {int(wait * 1000)}")
        try:
            return tuple(conn.execute(f"pragma wal_checkpoint({mode})").fetchone())
        finally:
            if wait is not None:
                conn.execute(f"pragma busy_timeout = {int(self._timeout * 1000)}")

    def restart_wal_after_commit(self) -> None:
        """Checkpoint the WAL (RESTART) when it has passed :attr:`wal_restart_bytes`,
        from the connection that just committed (one commit in :data:`WAL_LOOK_EVERY` looks).

        SQLite's autocheckpoint after a commit is PASSIVE: it cannot start the WAL over
        while another process reads an older snapshot, and with workers and the web app
        polling some process nearly always does, so the WAL grew with every job. A
        thread that checkpointed on a timer lost the race: at ~1,000 jobs/s (~30 MB/s of
        WAL) the workers' passive checkpoints held the checkpoint lock whenever it
        tried, and the WAL passed 25 MB. Here the writer that pushed the WAL past the
        limit checkpoints it before it writes again, holding the write lock (no commit
        can grow the WAL meanwhile) while older readers finish, at most
        :data:`WAL_RESTART_WAIT` seconds; the next commit then starts the WAL over and
        cuts the file to :data:`JOURNAL_SIZE_LIMIT`.

        While another process checkpoints (SQLite answers busy at once), a commit goes
        on, unless the WAL is past twice the limit: then that process has been
        descheduled mid-checkpoint (a niced worker on a loaded machine) and the WAL
        grows by every other commit, so this one waits for it, up to
        :data:`WAL_RESTART_PATIENCE` seconds. A reader that outlasts the wait (a
        backup) keeps the WAL from starting over anyway: the process's commits then
        leave it for :data:`WAL_RESTART_BACKOFF` seconds. Not on a full disk (see :meth:`is_full`),
        and never an error for the commit that already succeeded.
        """
        self._commits += 1
        if self._commits % WAL_LOOK_EVERY:
            return
        size = self.wal_size()
        if (size <= self.wal_restart_bytes or time.monotonic() < self._wal_restart_after
                or self.is_full()):
            return
        give_up = time.monotonic() + WAL_RESTART_PATIENCE
        while True:
            try:
                busy, frames, _ = self.checkpoint("restart", wait=WAL_RESTART_WAIT)
            except sqlite3.Error:
                logger.warning("WAL checkpoint after a commit failed", exc_info=True)
                return
            if busy and frames != -1:  # a reader outlasted the wait
                self._wal_restart_after = time.monotonic() + WAL_RESTART_BACKOFF
            if (frames != -1 or size <= 2 * self.wal_restart_bytes
                    or time.monotonic() > give_up):
                return
            time.sleep(0.002)  # SQLite does not wait for the checkpoint lock itself

    def wal_size(self) -> int:
        """The WAL file's size in bytes (0 when it does not exist)."""
        try:
            return os.path.getsize(f"{self.filename}-wal")
        except OSError:
            return 0

    # How a consumer's idle workers wait for work: nothing announces a new row in SQLite,
    # so one of them polls (PostgreSQL's hear a NOTIFY: qrq/queue/postgres.py).

    def wait_for_wakeups(self, poll_interval: float | None, stop=None, workers: int = 1) -> None:
        """Make :meth:`dequeue`, when it finds nothing, wait for its next poll: the
        consumer's *workers* share one :class:`~qrq.queue.poll_schedule.PollSchedule`,
        whose lead polls every *poll_interval* while the other idle workers sleep, so N
        idle workers poll as often as one; its *stop* flag ends a wait. None leaves the
        waits to huey's worker (a poll that backs off, each worker on its own)."""
        if poll_interval is not None:
            self.poll_schedule = PollSchedule(poll_interval, workers, stop)
            self.blocking = True

    def wakeups(self) -> int:
        """Wake-ups heard so far: none in SQLite (see :meth:`wait_for_work`)."""
        return 0

    def wait_for_work(self, heard: int, soon: bool = False) -> None:
        """Wait, if :attr:`blocking`, for this worker's next poll (also when work waits
        behind a cap, *soon*: a finished job's commit leases the next itself)."""
        if self.blocking:
            self.poll_schedule.wait_to_poll()

    def found_work(self, all_asked: bool) -> None:
        """A poll leased work (*all_asked*: as many rows as it asked for, so more may
        wait): see :meth:`~qrq.queue.poll_schedule.PollSchedule.found_work`."""
        if self.blocking:
            self.poll_schedule.found_work(all_asked)

    def stop_waiting(self) -> None:
        """The consumer's stop flag is set: end the idle workers' waits at once."""
        if self.blocking:
            self.poll_schedule.stop_waiting()

    # The schema (qrq.queue.migrations): SQLite's DDL as written; its own catalog.

    def schema_sql(self, sql: str) -> str:
        return sql

    def lock_schema(self, curs) -> None:
        """Nothing: the migration's transaction holds the file's write lock."""

    def schema_names(self, curs) -> set[str]:
        """The names of the database's tables and indexes."""
        curs.execute("select name from sqlite_master where type in ('table', 'index')")
        return {name for name, in curs.fetchall()}

    def table_columns(self, curs, table: str) -> set[str]:
        return {row[1] for row in curs.execute(f"pragma table_info({table})")}

    def reset_connections(self) -> None:
        self.close()

    def close(self):
        """Close the calling thread's connection."""
        conn = getattr(self._conns, "conn", None)
        if conn is None:
            return False
        conn.close()
        self._conns.conn = None
        return True

    def _group_commit(self, write) -> None:
        """Run ``write(cursor)`` in a transaction shared with other threads' writes.

        A durable commit waits for an fsync. Threads that call this while another
        thread commits queue up; the first of them to get the write lock writes
        every queued write in one transaction, so N concurrent enqueues from a
        threaded web server cost one fsync, not N. In a batch of several, each write
        has its own savepoint: one that fails raises in its own thread and takes
        nothing else with it. A batch of one (every write of a single thread) needs
        none: its failure rolls back the whole transaction, which holds only it.
        """
        pending = _PendingWrite(write)
        with self._pending_lock:
            self._pending.append(pending)
        with self.lock, self.writers:
            if not pending.done:  # no earlier thread wrote it with its own
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._write_batch(batch)
        error = pending.error
        if error is not None:
            raise moved.refused(error) if isinstance(error, sqlite3.IntegrityError) else error

    def _write_batch(self, batch: list[_PendingWrite]) -> None:
        try:
            with self._transaction(commit=True, close=False) as curs:
                if len(batch) == 1:  # two statements fewer than a savepoint's
                    batch[0].write(curs)
                    return
                for pending in batch:
                    curs.execute("savepoint qrq_write")
                    try:
                        pending.write(curs)
                    except Exception as exc:
                        if _disk_full(exc):  # no other write fits either
                            raise
                        curs.execute("rollback to qrq_write")
                        pending.error = exc
                    curs.execute("release qrq_write")
        except BaseException as exc:  # the commit failed: every write in it did
            for pending in batch:
                pending.error = pending.error or exc
        finally:
            for pending in batch:
                pending.done = True
