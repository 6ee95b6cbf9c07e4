"""The leased storage on PostgreSQL (:class:`LeasedPostgresStorage`): what differs from
SQLite, and only that. Its connections, pool and SQL translation are
:mod:`qrq.queue.postgres_connections`; its enqueue and its ends are
:mod:`qrq.queue.postgres_submit` and :mod:`qrq.queue.postgres_end`.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import psycopg

from qrq import pg_errors
from qrq.errors import Unavailable
from qrq.queue import jobs, postgres_submit, wakeup
from qrq.queue.pg_dialect import ddl
from qrq.queue.postgres_connections import (
    PostgresConnections,
    ServerDown,
    as_text,
    one_line,
    where,
)
from qrq.queue.postgres_end import OneTripEnd
from qrq.queue.roles import type_filter

logger = logging.getLogger("qrq.queue.storage")


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
        """``(row, data, job_id, first, attempt)`` of a row the lease statement returned."""
        if leased[2] is None:
            return (*leased[:3], None, None)
        first = jobs.attempt_started(curs, leased[2], owner, now, leased[3], leased[4:])
        return (*leased[:3], first, None if first is None else leased[4])

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
        except (Exception, ServerDown) as exc:  # the waits end anyway, a little later
            logger.debug("could not wake the idle workers to stop: %s",
                         one_line(exc, self.url))

    def dispose(self) -> None:
        """Done with this storage: its heartbeat, listener and connections stop."""
        self.stop_heartbeat()
        self.listener.stop()
        self.reset_connections()

    # huey passes result keys as bytes or str; the key column is text on both
    # databases, but only SQLite stores bytes in it as they come.

    def put_data(self, key, value, is_result=False):
        super().put_data(as_text(key), value, is_result)

    def peek_data(self, key):
        return super().peek_data(as_text(key))

    def pop_data(self, key):
        return super().pop_data(as_text(key))

    def has_data_for_key(self, key):
        return super().has_data_for_key(as_text(key))

    def put_if_empty(self, key, value, ttl=None):
        return super().put_if_empty(as_text(key), value, ttl)

    def peek_many(self, keys):
        return super().peek_many([as_text(key) for key in keys])

    # The schema (qrq.queue.migrations): SQLite's DDL with PostgreSQL's types.

    def initialize_schema(self) -> list[int]:
        try:
            return super().initialize_schema()
        except psycopg.errors.InsufficientPrivilege as exc:
            raise Unavailable(f"cannot create qrq's tables in {where(self.url)} (grant the "
                              f"user CREATE on its schema): "
                              f"{one_line(exc, self.url)}") from None
        except psycopg.errors.InvalidSchemaName as exc:
            raise Unavailable(str(pg_errors.describe(exc, self.url))) from None

    def schema_sql(self, sql: str) -> str:
        return ddl(sql)

    def lock_schema(self, curs) -> None:
        curs.execute("select pg_advisory_xact_lock(hashtext('qrq-queue-schema'))")

    def schema_names(self, curs) -> set[str]:
        """The names of the tables and indexes in qrq's schema."""
        curs.execute("select tablename from pg_tables where schemaname = current_schema() "
                     "union all "
                     "select indexname from pg_indexes where schemaname = current_schema()")
        return {name for name, in curs.fetchall()}

    def table_columns(self, curs, table: str) -> set[str]:
        curs.execute("select column_name from information_schema.columns "
                     "where table_schema = current_schema() and table_name = ?", (table,))
        return {name for name, in curs.fetchall()}
