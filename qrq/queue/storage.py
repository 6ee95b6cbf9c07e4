"""Huey's SQLite storage with leases, so a consumer that dies never loses a job.

Stock ``SqliteStorage.dequeue`` deletes the task row before the task runs; if
the consumer is then killed the job is gone. Here dequeue *leases* the row
instead: it stamps ``lease_until`` and ``lease_owner`` and leaves it in place.
A heartbeat thread in each consumer process renews its leases while tasks run;
completion deletes the row. A row whose lease lapsed (its consumer died) is
leased again by the next dequeue, on any consumer.

Each change is one transaction: dequeue leases a row and marks its job record
running; completion deletes the row and writes the job's outcome. Job records
live in the same file (see :mod:`qrq.queue.jobs`), so they commit atomically with the
queue operation that causes them.

Without qrq's Huey subclass (plain ``Huey(storage_class=...)``, as huey's own
storage tests use it) nothing calls :meth:`complete`; the row a thread leased is
then deleted by that thread's next dequeue, in the same transaction.

Connections, transactions and group commits are :mod:`qrq.queue.connections`'.
"""

from __future__ import annotations

import logging
import threading
import time

from huey.constants import EmptyData
from huey.storage import SqliteStorage

from qrq.queue import admission as admission_checks
from qrq.queue import jobs
from qrq.queue.connections import ThreadedSqliteStorage
from qrq.queue.leases import LeaseHolder
from qrq.queue.pauses import NOT_PAUSED
from qrq.queue.schema import ADDED_COLUMNS, LATE_DDL, QUEUE_DDL

logger = logging.getLogger("qrq.queue.storage")

class LeasedSqliteStorage(LeaseHolder, ThreadedSqliteStorage):
    table_task = ("create table if not exists task ("
                  "id integer not null primary key, queue text not null, "
                  "data blob not null, priority real not null default 0.0, "
                  "job_id text, job_type text, lease_until real, lease_owner text)")
    table_sched = ("create table if not exists schedule ("
                   "id integer not null primary key, queue text not null, "
                   "data blob not null, timestamp real not null, "
                   "job_id text, job_type text, priority real not null default 0.0)")
    ddl = [SqliteStorage.table_kv, table_sched, SqliteStorage.index_sched,
           table_task, SqliteStorage.index_task, SqliteStorage.table_counter,
           *QUEUE_DDL]
    available = "queue = ? and (lease_until is null or lease_until < ?)"
    # Columns qrq adds to huey's tables: a queue.db made by stock huey (or an older
    # qrq) gains them when opened, so "create table if not exists" is not a trap.
    added_columns = {
        "task": ("job_id text", "job_type text", "lease_until real", "lease_owner text"),
        "schedule": ("job_id text", "job_type text",
                     "priority real not null default 0.0"),
        **ADDED_COLUMNS,
    }

    def __init__(self, name="huey", filename="huey.db", lease_seconds=30.0, caps=None,
                 long_cap=None, **kwargs):
        self.lease_seconds = float(lease_seconds)
        # Most rows of a job type leased at once (caps), and of all capped types
        # together (long_cap), so long jobs never hold every worker.
        self.caps = dict(caps or {})
        self.long_cap = long_cap
        self._local = threading.local()
        self._owner_pid = None
        self._owner = None
        self.consumer_id = None  # set by the consumer before it forks its workers
        # Whether a completion may lease the next row for the worker's next dequeue
        # (complete(lease_next=True)); only a consumer's workers, which dequeue again
        # at once, set it: an inline run must not hold a job it will never start.
        self.lease_ahead = False
        # Rows this process is running. Only these are renewed: a row whose
        # completion could not be written drops out and its lease lapses.
        self._held = set()
        self._heartbeat = None
        self._stop_beating = threading.Event()
        super().__init__(name, filename, **kwargs)

    def initialize_schema(self):
        with self.db(commit=True, close=True) as curs:
            for sql in self.ddl:
                curs.execute(sql)
            for table, columns in self.added_columns.items():
                have = {row[1] for row in curs.execute(f"pragma table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        curs.execute(f"alter table {table} add column {column}")
            for sql in LATE_DDL:
                curs.execute(sql)
            # The running rows, for the per-type caps checked at every dequeue;
            # without it that check scans the whole backlog.
            curs.execute("create index if not exists task_leased on task "
                         "(queue, lease_until) where lease_until is not null")

    # -- the queue ----------------------------------------------------------------------

    def enqueue(self, data, priority=None, job_id=None, job=None, job_type=None, eta=None,
                admission=None) -> str | None:
        """Insert a task row (or a schedule row when *eta* is given), and its job
        record in the same transaction when given.

        *admission* (:class:`qrq.queue.admission.Admission`) is checked in that
        transaction too; when its idempotency key was seen nothing is written and
        the existing job's id is returned. Otherwise returns *job_id*.
        """
        outcome = job_id

        def write(curs):
            nonlocal outcome
            if job is not None:
                replay = admission_checks.admit(curs, job["owner_id"], admission)
                if replay is not None:
                    outcome = replay
                    return
                # The record keeps the signed payload, so a failed job can be re-run.
                jobs.insert(curs, {**job, "payload": self.to_blob(data)})
                admission_checks.record_key(curs, job["id"], admission)
            if eta is not None:
                curs.execute("insert into schedule (queue, data, timestamp, job_id, job_type, "
                             "priority) values (?, ?, ?, ?, ?, ?)",
                             (self.name, self.to_blob(data), eta.timestamp(), job_id,
                              job_type, priority or 0))
            else:
                curs.execute("insert into task (queue, data, priority, job_id, job_type) "
                             "values (?, ?, ?, ?, ?)",
                             (self.name, self.to_blob(data), priority or 0, job_id, job_type))

        self._group_commit(write)
        return outcome

    def enqueue_retry(self, data, priority, job_id: str, job_type: str | None) -> bool:
        """Re-run an ended job under its id: reset its record and queue it, atomically."""
        with self.db(commit=True) as curs:
            if not jobs.reset_for_retry(curs, job_id):
                return False
            curs.execute("delete from kv where queue = ? and key = ?", (self.name, f"r:{job_id}"))
            curs.execute("insert into task (queue, data, priority, job_id, job_type) "
                         "values (?, ?, ?, ?, ?)",
                         (self.name, self.to_blob(data), priority or 0, job_id, job_type))
        return True

    def _blocked_types(self, curs, now: float) -> tuple[str, ...]:
        """The capped job types that may not start another job right now."""
        if not self.caps:
            return ()
        curs.execute("select job_type, count(*) from task where queue = ? and "
                     "lease_until >= ? and job_type is not null group by job_type",
                     (self.name, now))
        running = dict(curs.fetchall())
        if self.long_cap is not None and sum(
                running.get(t, 0) for t in self.caps) >= self.long_cap:
            return tuple(self.caps)
        return tuple(t for t, cap in self.caps.items() if running.get(t, 0) >= cap)

    def _pick_sql(self, blocked: tuple[str, ...]) -> str:
        sql = f"from task where {self.available} and {NOT_PAUSED}"  # paused types wait
        if blocked:
            sql += f" and (job_type is null or job_type not in ({','.join('?' * len(blocked))}))"
        return sql

    def _has_work(self, now: float) -> bool:
        """A read-only look, so idle polls never take the write lock."""
        with self.db() as curs:
            return self._pick(curs, now, "job_type") is not None

    def _pick(self, curs, now: float, columns: str) -> tuple | None:
        """*columns* of the next row this process may lease (its ``job_type`` last).

        The per-type caps are counted only when the first row in line is of a capped
        type: an uncapped job is never held back, and counting the leased rows at
        every dequeue cost more than the rest of it.
        """
        order = "order by priority desc, id limit 1"
        curs.execute(f"select {columns} {self._pick_sql(())} {order}", (self.name, now))
        found = curs.fetchone()
        if found is None or found[-1] not in self.caps:
            return found
        blocked = self._blocked_types(curs, now)
        if found[-1] not in blocked:
            return found
        curs.execute(f"select {columns} {self._pick_sql(blocked)} {order}",
                     (self.name, now, *blocked))
        return curs.fetchone()

    def dequeue(self):
        ahead = getattr(self._local, "ahead", None)
        if ahead is not None:  # leased by this thread's last completion
            self._local.ahead = None
            row, data, job_id = ahead
            self._local.row, self._local.job_id = row, job_id
            return data
        owner = self.owner
        now = time.time()
        stale = getattr(self._local, "row", None)
        if stale is None and not self._has_work(now):
            return None
        with self.db(commit=True) as curs:
            if stale is not None:
                curs.execute("delete from task where id = ? and lease_owner = ?",
                             (stale, owner))
                self._take_lease()
            leased = self._lease_next(curs, owner, now)
        if leased is None:
            return None
        row, data, job_id = self._hold(leased)
        self._local.row, self._local.job_id = row, job_id
        return data

    def _lease_next(self, curs, owner: str, now: float) -> tuple | None:
        """Lease the next row this process may run; ``(row, data, job_id)`` or None."""
        found = self._pick(curs, now, "id, data, job_id, job_type")
        if found is None:
            return None
        row, data, job_id, _ = found
        curs.execute("update task set lease_until = ?, lease_owner = ? where id = ?",
                     (now + self.lease_seconds, owner, row))
        if job_id is not None:
            jobs.mark_running(curs, job_id, owner, now)
        return row, data, job_id

    def _hold(self, leased: tuple) -> tuple:
        """Renew *leased*'s lease from now on (its transaction committed)."""
        self._held.add(leased[0])
        self._ensure_heartbeat()
        return leased

    def give_back_ahead(self) -> None:
        """Give back the row this thread's last completion leased for its next run (the
        worker is stopping), so it runs at once elsewhere rather than when its lease lapses."""
        ahead = getattr(self._local, "ahead", None)
        if ahead is None:
            return
        self._local.ahead = None
        row, _, job_id = ahead
        self._held.discard(row)
        with self.db(commit=True) as curs:
            if self._end_lease(curs, row, job_id, give_back=True) and job_id is not None:
                jobs.mark_released(curs, job_id)

    @property
    def leased_job_id(self) -> str | None:
        """The job id of the row this thread holds, if any."""
        return getattr(self._local, "job_id", None)

    def _take_lease(self) -> int | None:
        """Forget this thread's lease (before writing its end, so a failed write
        lets the lease lapse and the job run again) and return its row id."""
        row = getattr(self._local, "row", None)
        self._local.row = self._local.job_id = None
        self._held.discard(row)
        return row

    def _end_lease(self, curs, row: int | None, job_id: str | None, *,
                   give_back: bool = False) -> bool:
        """Delete this thread's leased *row* (or, with *give_back*, clear its lease);
        False when the lease was lost, so nothing of this run may be written.

        A lease that lapsed (a stalled host) can be taken by another consumer; its
        row then names the new owner, and the newer attempt's outcome stands.
        """
        if row is None:
            return True
        if give_back:
            curs.execute("update task set lease_until = null, lease_owner = null "
                         "where id = ? and lease_owner = ?", (row, self.owner))
        else:
            curs.execute("delete from task where id = ? and lease_owner = ?",
                         (row, self.owner))
        if curs.rowcount:
            return True
        logger.warning("job %s: this run lost its lease (it lapsed and the job was taken "
                       "over or canceled); its outcome is dropped", job_id)
        return False

    def complete(self, job_id: str | None, outcome: dict | None,
                 lease_next: bool = False) -> None:
        """Delete the row this thread leased and record the job's *outcome*, atomically.

        With *lease_next* and :attr:`lease_ahead` (a consumer's worker, which dequeues
        next), the same transaction leases
        the next row for this thread's next :meth:`dequeue`: one commit per job instead
        of two, and the pages the two share (the task and job rows' neighbours, the
        index entries of both) are written once.
        """
        row = self._take_lease()
        with self.db(commit=True) as curs:
            if self._end_lease(curs, row, job_id) and job_id is not None \
                    and outcome is not None:
                jobs.finish(curs, job_id, outcome)
            ahead = self._lease_next(curs, self.owner, time.time()) \
                if lease_next and self.lease_ahead else None
        if ahead is not None:
            self._local.ahead = self._hold(ahead)

    def release(self, job_id: str | None) -> None:
        """Give this thread's lease back so the job runs again, here or elsewhere."""
        row = self._take_lease()
        if row is None:
            return
        with self.db(commit=True) as curs:
            if self._end_lease(curs, row, job_id, give_back=True) and job_id is not None:
                jobs.mark_released(curs, job_id)

    def reschedule(self, data, eta, job_id: str | None, next_attempt: dict | None,
                   job_type: str | None = None, priority: float | None = None) -> None:
        """Swap this thread's leased row for a schedule entry at *eta* (a retry)."""
        row = self._take_lease()
        with self.db(commit=True) as curs:
            if not self._end_lease(curs, row, job_id):
                return
            curs.execute("insert into schedule (queue, data, timestamp, job_id, job_type, "
                         "priority) values (?, ?, ?, ?, ?, ?)",
                         (self.name, self.to_blob(data), eta.timestamp(), job_id, job_type,
                          priority or 0))
            if job_id is not None and next_attempt is not None:
                jobs.mark_waiting(curs, job_id, next_attempt)

    def read_schedule(self, ts):
        # A job's scheduled row moves into the queue in one transaction, so a crash
        # between "read the schedule" and "enqueue" (huey's two steps) cannot drop
        # it. Rows without a job (plain huey use) go the stock way.
        with self.db(commit=True) as curs:
            due = (self.name, ts.timestamp())
            curs.execute("insert into task (queue, data, priority, job_id, job_type) "
                         "select queue, data, priority, job_id, job_type from schedule "
                         "where queue = ? and timestamp <= ? and job_id is not null "
                         "order by timestamp, id", due)
            curs.execute("delete from schedule where queue = ? and timestamp <= ? "
                         "and job_id is not null", due)
        return super().read_schedule(ts)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job still waiting (queued, or scheduled for a retry): remove its
        row and mark it canceled, atomically. False if it was not waiting."""
        with self.db(commit=True) as curs:
            curs.execute("delete from task where job_id = ? and queue = ? and "
                         "(lease_until is null or lease_until < ?)",
                         (job_id, self.name, time.time()))
            removed = curs.rowcount
            curs.execute("delete from schedule where job_id = ? and queue = ?",
                         (job_id, self.name))
            removed += curs.rowcount
            if removed:
                jobs.finish(curs, job_id, {"status": "canceled", "error": "canceled"})
            return removed > 0

    def queue_size(self):
        return self.sql(f"select count(id) from task where {self.available}",
                        (self.name, time.time()), results=True)[0][0]

    def backlog(self) -> int:
        """Rows queued or running in this queue: one scan of the (queue, priority, id)
        index, so it stays cheap however many rows wait."""
        return self.sql("select count(*) from task where queue = ?", (self.name,),
                        results=True)[0][0]

    def enqueued_items(self, limit=None):
        sql = (f"select data from task where {self.available} "
               "order by priority desc, id")
        params = (self.name, time.time())
        if limit is not None:
            sql += " limit ?"
            params += (limit,)
        return [data for data, in self.sql(sql, params, results=True)]

    def flush_queue(self):
        super().flush_queue()
        self._local.row = self._local.job_id = self._local.ahead = None

    def pop_data(self, key):
        # huey deletes every task's revoke key after it runs; almost always there
        # is none, and this read spares a write transaction.
        if not self.has_data_for_key(key):
            return EmptyData
        return super().pop_data(key)
