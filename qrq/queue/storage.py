"""Huey's storage with leases, so a consumer that dies never loses a job.

Stock ``SqliteStorage.dequeue`` deletes the task row before the task runs; if
the consumer is then killed the job is gone. Here dequeue *leases* the row
instead: it stamps ``lease_until`` and ``lease_owner`` and leaves it in place.
A heartbeat thread in each consumer process renews its leases while tasks run;
completion deletes the row. A row whose lease lapsed (its consumer died) is
leased again by the next dequeue, on any consumer.

Each change is one transaction: dequeue leases a row and marks its job record
(:mod:`qrq.queue.jobs`, same database) running; completion deletes the row and
writes the job's outcome (a consumer's worker running short jobs writes a batch of
them in one, :mod:`qrq.queue.run_ahead`). Without qrq's Huey subclass (huey's own
storage tests) nothing calls :meth:`complete`; a thread's leased row is then deleted
by its next dequeue, in the same transaction.

One class, :class:`LeasedStorage`, holds the logic for both databases; what
differs is a few methods of :class:`qrq.queue.sqlite_storage.LeasedSqliteStorage` and of
:class:`qrq.queue.postgres.LeasedPostgresStorage`, above their connection layers
(:mod:`qrq.queue.connections`, :mod:`qrq.queue.postgres_connections`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

from qrq.queue import admission as admission_checks
from qrq.queue import jobs, migrations, run_ahead
from qrq.queue.leases import HeldRows, LeaseHolder
from qrq.queue.pauses import NOT_PAUSED
from qrq.queue.portable import PortableHueyApi
from qrq.queue.roles import type_filter
from qrq.queue.run_ahead import RunAhead, batch_size

logger = logging.getLogger("qrq.queue.storage")


class LeasedStorage(RunAhead, LeaseHolder, PortableHueyApi):
    """Leases, job records and caps on either database. A subclass per database says
    what differs: the clock (:attr:`now_sql`), the lease statement, how capped picks
    are serialised, and how idle workers hear of new work."""

    # Rows no one holds. Lease times are the database's clock (now_sql), so hosts with
    # skewed clocks agree on when a lease lapses.
    now_sql = None
    skip_locked = ""  # how a pick passes over rows other transactions hold
    # How a transaction keeps a row it read from other writers until it commits
    # (SQLite's write transaction holds the whole database already).
    for_update = ""
    # Whether dequeue waits for work itself (wait_for_work) instead of huey's worker
    # sleeping between empty polls; the consumer sets it (wait_for_wakeups).
    blocking = False
    poll_interval = 0.05  # seconds: how soon to look again when work waits behind a cap

    def __init__(self, name="huey", lease_seconds=30.0, caps=None, long_cap=None,
                 accept_types=(), exclude_types=(), **kwargs):
        self.lease_seconds = float(lease_seconds)
        # Most rows of a job type leased at once (caps), and of all capped types
        # together (long_cap), so long jobs never hold every worker.
        self.caps = dict(caps or {})
        self.long_cap = long_cap
        self.accept_types, self.exclude_types = tuple(accept_types), tuple(exclude_types)
        self.available = f"queue = ? and (lease_until is null or lease_until < {self.now_sql})"
        self._local = threading.local()
        self._owner_pid = None
        self._owner = None
        self.consumer_id = None  # set by the consumer before it forks its workers
        # Whether a completion may lease the rows of the worker's next dequeues
        # (complete(lease_next=True)); only a consumer's workers, which dequeue again
        # at once, set it: an inline run must not hold a job it will never start.
        self.lease_ahead = False
        self._reset_batches()
        # Rows this process is running. Only these are renewed: a row whose
        # completion could not be written drops out and its lease lapses.
        self._held = HeldRows()
        self._heartbeat = None
        self._stop_beating = threading.Event()
        super().__init__(name, **kwargs)

    def initialize_schema(self) -> list[int]:
        """Apply the schema steps the database lacks; return their numbers."""
        return migrations.migrate(self)

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
                if admission is not None:
                    self._lock_owner(curs, job["owner_id"])
                replay = admission_checks.admit(curs, job["owner_id"], admission)
                if replay is not None:
                    outcome = replay
                    return
                # The record keeps the signed payload, so a failed job can be re-run.
                # A record that exists already (a periodic slot another consumer's
                # scheduler enqueued) means the job is queued: nothing more to write.
                if not jobs.insert(curs, {**job, "payload": self.to_blob(data)}):
                    return
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
                self._notify(curs)

        self._group_commit(write)
        return outcome

    def enqueue_retries(self, entries: list[tuple]) -> list[bool]:
        """Re-run ended jobs under their ids, in one transaction: for each ``(data,
        priority, job_id, job_type)``, reset its record and queue it, or (False) neither
        when it is no longer failed, canceled or expired (a job given twice runs once)."""
        queued = []
        with self.db(commit=True) as curs:
            for data, priority, job_id, job_type in entries:
                queued.append(jobs.reset_for_retry(curs, job_id))
                if queued[-1]:
                    curs.execute("delete from kv where queue = ? and key = ?",
                                 (self.name, f"r:{job_id}"))
                    curs.execute("insert into task (queue, data, priority, job_id, job_type) "
                                 "values (?, ?, ?, ?, ?)", (self.name, self.to_blob(data),
                                                            priority or 0, job_id, job_type))
            if any(queued):
                self._notify(curs)
        return queued

    def _blocked_types(self, curs) -> tuple[str, ...]:
        """The capped job types that may not start another job right now."""
        curs.execute("select job_type, count(*) from task where queue = ? and "
                     f"lease_until >= {self.now_sql} and job_type is not null "
                     "group by job_type", (self.name,))
        running = dict(curs.fetchall())
        if self.long_cap is not None and sum(
                running.get(t, 0) for t in self.caps) >= self.long_cap:
            return tuple(self.caps)
        return tuple(t for t, cap in self.caps.items() if running.get(t, 0) >= cap)

    def _pick_sql(self, blocked: tuple[str, ...], limit: int = 1) -> str:
        """The row to lease next (the first *limit* rows in line; parameters:
        :meth:`_pick_params`), passing over *blocked* types (at their cap) and types
        this host does not take."""
        sql = f"from task where {self.available} and {NOT_PAUSED}"  # paused types wait
        sql += type_filter(self.accept_types, (*self.exclude_types, *blocked))
        return f"{sql} order by priority desc, id limit {int(limit)}"

    def _pick_params(self, blocked: tuple[str, ...]) -> tuple:
        return (self.name, *self.accept_types, *self.exclude_types, *blocked)

    def _next_type(self, curs) -> tuple | None:
        """``(job_type,)`` of the first row in line, or None when none waits: a
        read-only look, so idle polls never take a write lock."""
        curs.execute(f"select job_type {self._pick_sql(())}", self._pick_params(()))
        return curs.fetchone()

    def dequeue(self):
        self.owner  # noqa: B018  (read first: a forked worker starts its own state)
        batch = self._batch()
        leased = self._next_ahead(batch)  # leased by this thread's last completion
        if leased is None:
            heard = self.wakeups()
            stale = getattr(self._local, "row", None)
            waiting = self._take_ended(batch)  # ends of the batch not written yet
            has_work = stale is not None or bool(waiting) or self._has_work()
            if has_work:
                asked = self._dequeue_count(batch)
                stale_job = getattr(self._local, "job_id", None)
                _, _, stale_attempt = self._take_lease()

                def write() -> tuple[list[jobs.EndedJob], list[tuple]]:
                    with self.db(commit=True) as curs:
                        self._end_lease(curs, stale, stale_job, stale_attempt)
                        return self._end_runs(curs, waiting), self._lease_ahead(curs, asked)

                ended, found = self._ending([stale, *(r[0] for r in waiting)], write)
                self._report_ended(ended)
                self._keep_ahead(batch, found)
                leased = self._next_ahead(batch)
                if leased is not None:
                    self.found_work(len(found) >= asked)
            if leased is None:
                self.wait_for_work(heard, soon=has_work)
                return None
        row, data, job_id, self._local.first, self._local.attempt = leased
        self._local.row, self._local.job_id = row, job_id
        return data

    def _dequeue_count(self, batch) -> int:
        """How many rows a dequeue that found work leases: one, or for a consumer's worker
        whose last run was short and ended within :data:`~qrq.queue.run_ahead.RECENT`
        seconds, a batch as a completion would (the first runs now), so the jobs found by
        one poll take one commit to lease instead of two."""
        if not self.lease_ahead or batch.last_ran is None \
                or time.monotonic() - batch.last_ended > run_ahead.RECENT:
            return 1
        return batch_size(batch.last_ran)

    def _has_work(self) -> bool:
        with self.db() as curs:
            return self._next_type(curs) is not None

    def _lease_next(self, curs, owner: str) -> tuple | None:
        """Lease the next row this process may run and mark its job running, the
        attempt counted; ``(row, data, job_id, first, attempt)`` or None (*first*:
        whether the job's first run; *attempt*: the run's number, the job's count).

        The per-type caps are counted only when the row first in line is of a capped
        type: the first lease takes that row unless it is, so an uncapped job is never
        held back, and a pick of one costs one statement (counting the leased rows at
        every dequeue cost more than the rest of it). Capped picks are serialised
        (:meth:`_lock_caps`), so count-then-pick is exact across consumers.
        """
        if not self.caps:
            return self._lease(curs, owner, ())
        leased = self._lease(curs, owner, (), head_unless=tuple(self.caps))
        if leased is not None or self._next_type(curs) is None:
            return leased
        self._lock_caps(curs)
        return self._lease(curs, owner, self._blocked_types(curs))

    def _lease_ahead(self, curs, count: int) -> list[tuple]:
        """Lease the first *count* rows in line, up to the first of a capped type, in two
        statements (:meth:`_lease_rows` is each database's own); from a capped row on,
        the generic loop leases them one at a time, counting the caps."""
        if count > 1:
            curs.execute(f"select id, job_type {self._pick_sql((), count)}{self.skip_locked}",
                         self._pick_params(()))
            ids = [row for row, job_type in itertools.takewhile(
                lambda found: found[1] not in self.caps, curs.fetchall())]
            if ids:
                return self._lease_rows(curs, ids)
        return super()._lease_ahead(curs, count)

    def _hold(self, leased: tuple) -> tuple:
        """Renew *leased*'s lease from now on (its transaction committed)."""
        self._held.hold(leased[0], time.monotonic() + self.lease_seconds)
        self._ensure_heartbeat()
        return leased

    @property
    def leased_job_id(self) -> str | None:
        """The job id of the row this thread holds, if any."""
        return getattr(self._local, "job_id", None)

    def _take_lease(self) -> tuple[int | None, bool | None, int | None]:
        """Take this thread's lease to end it (it stays held, renewed, until the end is
        written: :meth:`_ending`); return its row id, if a first run, and its number."""
        local = self._local
        run = (getattr(local, "row", None), getattr(local, "first", None),
               getattr(local, "attempt", None))
        local.row = local.job_id = local.first = local.attempt = None
        return run

    def complete(self, job_id: str | None, outcome: dict | None,
                 lease_next: bool = False) -> list[jobs.EndedJob]:
        """Delete the row this thread leased and record the job's *outcome*, atomically;
        return the jobs this ended (none: e.g. the lease was lost).

        With *lease_next* and :attr:`lease_ahead` (a consumer's worker, which dequeues
        next), the same transaction leases the rows of this thread's next dequeues, and
        while the rows leased so run short their ends wait for the commit that leases
        the next batch (:mod:`qrq.queue.run_ahead`); the jobs that commit ended are
        returned by the completion that makes it."""
        batch = self._batch()
        now = time.monotonic()
        ran = now - (batch.running_since or 0.0)
        batch.running_since, batch.last_ran, batch.last_ended = None, ran, now
        row, first, attempt = self._take_lease()
        run = (row, job_id, outcome, first, attempt)
        ahead = lease_next and self.lease_ahead
        if ahead and self._defer_end(batch, run, ran):
            return []
        runs = [*self._take_ended(batch), run]

        def write() -> tuple[list[jobs.EndedJob], list[tuple]]:
            with self.db(commit=True) as curs:
                return self._end_runs(curs, runs), self._lease_ahead(
                    curs, batch_size(ran)) if ahead and not batch.ahead else []

        ended, leased = self._ending([r[0] for r in runs], write)
        self._keep_ahead(batch, leased)
        return ended

    def _end_run(self, curs, row, job_id, outcome, first, attempt) -> jobs.EndedJob | None:
        """:meth:`complete`'s writes: end the lease on *row*, then record *outcome*."""
        if not self._end_lease(curs, row, job_id, attempt):
            return self._lease_gone(curs, job_id, outcome and outcome["status"], attempt)
        if job_id is not None and outcome is not None:
            return jobs.finish(curs, job_id, outcome, first)
        return None

    def release(self, job_id: str | None) -> None:
        """Give this thread's lease back so the job runs again, here or elsewhere."""
        row, first, attempt = self._take_lease()
        if row is None:
            return

        def write() -> None:
            with self.db(commit=True) as curs:
                self._give_back(curs, row, job_id, first, attempt)

        self._ending([row], write)

    def _give_back(self, curs, row: int, job_id: str | None, first: bool | None,
                   attempt: int | None) -> None:
        """Clear *row*'s lease unfinished: its job waits to run again, from the start."""
        if not self._end_lease(curs, row, job_id, attempt, give_back=True):
            self._lease_gone(curs, job_id)
        elif job_id is not None:
            jobs.mark_released(curs, job_id, first)

    def reschedule(self, data, eta, job_id: str | None, next_attempt: dict | None,
                   job_type: str | None = None, priority: float | None = None) -> None:
        """Swap this thread's leased row for a schedule entry at *eta* (a retry)."""
        row, first, attempt = self._take_lease()

        def write() -> None:
            with self.db(commit=True) as curs:
                if not self._end_lease(curs, row, job_id, attempt):
                    self._lease_gone(curs, job_id)
                    return
                curs.execute("insert into schedule (queue, data, timestamp, job_id, "
                             "job_type, priority) values (?, ?, ?, ?, ?, ?)",
                             (self.name, self.to_blob(data), eta.timestamp(), job_id,
                              job_type, priority or 0))
                if job_id is not None and next_attempt is not None:
                    jobs.mark_waiting(curs, job_id, next_attempt, first)

        self._ending([row], write)

    def read_schedule(self, ts):
        # A job's scheduled row moves into the queue in one transaction, so a crash
        # between "read the schedule" and "enqueue" (huey's two steps) cannot drop
        # it. Rows without a job (plain huey use) are taken out and returned, as
        # huey's storage does: each by one scheduler, however many run.
        due = (self.name, ts.timestamp())
        with self.db(commit=True) as curs:
            if self._move_due(curs, due):
                self._notify(curs)
            curs.execute("delete from schedule where id in (select id from schedule where "
                         f"queue = ? and timestamp <= ? and job_id is null{self.skip_locked}) "
                         "returning timestamp, id, data", due)
            return [data for _, _, data in sorted(curs.fetchall())]

    def cancel_queued(self, job_id: str) -> jobs.EndedJob | None:
        """Cancel a job still waiting (queued, or scheduled for a retry): remove its
        row and mark it canceled, atomically; the ended job, or None if it was not waiting."""
        with self.db(commit=True) as curs:
            curs.execute(f"delete from task where job_id = ? and {self.available}",
                         (job_id, self.name))
            removed = curs.rowcount
            curs.execute("delete from schedule where job_id = ? and queue = ?",
                         (job_id, self.name))
            removed += curs.rowcount
            return jobs.finish(curs, job_id, {"status": "canceled", "error": "canceled"}) \
                if removed else None

    def flush_queue(self):
        super().flush_queue()
        self._local.row = self._local.job_id = self._local.first = self._local.attempt = None
        with self._batches_lock:  # the rows are gone
            for batch in self._batches:
                batch.ahead.clear()
                batch.ended, batch.ended_since = [], None

    # -- what each database does its own way (the defaults: SQLite's) -------------------

    def _lock_caps(self, curs) -> None:
        """Serialise capped picks across processes (SQLite's write lock already does)."""

    def _lock_owner(self, curs, owner_id: int | None) -> None:
        """Serialise one owner's admission checks (quota, idempotency key) across
        processes (SQLite's write lock already does)."""

    def _notify(self, curs) -> None:
        """Tell idle workers a row is ready, when this transaction commits."""

    # How idle workers wait for work (wait_for_wakeups, wakeups, wait_for_work,
    # found_work, stop_waiting): SQLite's lead worker polls (connections.py),
    # PostgreSQL's hear a NOTIFY (postgres.py).
