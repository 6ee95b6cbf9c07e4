"""Who holds a lease, and the heartbeat that keeps it alive.

Each consumer process (each forked worker too) has its own owner id; a heartbeat
thread renews the leases of the rows the process is running, every third of the
lease, so a live run never loses its row and a dead one's lapses. A row stays held
until the transaction that ends its run commits (:meth:`LeaseHolder._ending`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from qrq.errors import Unavailable
from qrq.queue import jobs

logger = logging.getLogger("qrq.queue.storage")
T = TypeVar("T")
LEASE_LOST = ("job %s: this run lost its lease (it lapsed and the job was taken over or "
              "canceled); its outcome is dropped")

# A job's run still holds it: the task row's job is still on the run's attempt (parameters:
# the job id, then the run's attempt). PostgreSQL's one-statement end embeds it.
RUN_FENCE = ("exists (select 1 from job where job.id = ? and job.id = task.job_id "
             "and job.attempts = ?)")

_OWNER_LOCK = threading.Lock()


def _new_owner_lock() -> None:
    # A forked child must not inherit the lock in a held state.
    global _OWNER_LOCK
    _OWNER_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_owner_lock)


class HeldRows:
    """The rows this process runs, whose leases the heartbeat renews, each with when
    its lease lapses at the latest on this process's clock (``time.monotonic``), and
    how many holds it has: a row one thread gave back can be leased again by another
    before the first lets go of it, and must stay held for the second."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holds: dict[int, int] = {}
        self._lapses: dict[int, float] = {}

    def hold(self, row: int, lapses: float) -> None:
        with self._lock:
            self._holds[row] = self._holds.get(row, 0) + 1
            self._lapses[row] = max(self._lapses.get(row, 0.0), lapses)

    def let_go(self, rows: Iterable[int]) -> None:
        with self._lock:
            for row in rows:
                if self._holds.get(row, 0) > 1:
                    self._holds[row] -= 1
                else:
                    self._holds.pop(row, None)
                    self._lapses.pop(row, None)

    def rows(self) -> list[int]:
        with self._lock:
            return list(self._holds)

    def renewed(self, rows: Iterable[int], lapses: float) -> None:
        """*rows*' leases were pushed back to *lapses* (those still held)."""
        with self._lock:
            for row in rows:
                if row in self._lapses:
                    self._lapses[row] = max(self._lapses[row], lapses)

    def lapses_at(self, rows: Iterable[int]) -> float:
        """When the first of *rows*' leases lapses (0: none of them is held)."""
        with self._lock:
            return min((self._lapses[row] for row in rows if row in self._lapses),
                       default=0.0)


class LeaseHolder:
    """Mixed into the storage, which sets ``now_sql`` (the database's clock),
    ``lease_seconds``, ``consumer_id``,
    ``_owner``, ``_owner_pid``, ``_held``, ``_heartbeat`` and ``_stop_beating``, and
    has ``_reset_batches`` (:class:`qrq.queue.run_ahead.RunAhead`)."""

    @property
    def owner(self) -> str:
        """This process's lease owner id; a forked worker gets its own."""
        if self._owner_pid != os.getpid():
            with _OWNER_LOCK:  # threads starting together must not each reset the state
                if self._owner_pid != os.getpid():
                    self._new_owner()
        return self._owner

    def _new_owner(self) -> None:
        consumer = self.consumer_id or f"{socket.gethostname()}:{os.getpid()}"
        self._owner = f"{consumer}/{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat = None
        self._stop_beating = threading.Event()
        self._local = threading.local()
        self._held = HeldRows()
        self._reset_batches()
        self._owner_pid = os.getpid()  # last: other threads see a complete state

    def _ensure_heartbeat(self) -> None:
        if self._stop_beating.is_set():
            return
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, args=(self.owner,),
                                               name="qrq-lease-heartbeat", daemon=True)
            self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        """Stop renewing this process's leases (they lapse unless released first)."""
        self._stop_beating.set()

    def _beat(self, owner: str) -> None:
        interval = self.lease_seconds / 3
        # After a failed renewal (the database away for a moment), try again this often:
        # at the interval, a lease renewed last just before an outage shorter than the
        # lease could lapse before the next beat, and another consumer run the job again.
        soon = min(1.0, interval / 4)
        stop, failing = self._stop_beating, False
        while not stop.wait(soon if failing else interval) and owner == self._owner:
            try:
                renewed = self.renew_leases()
            except Exception:
                if not failing:
                    logger.exception("lease heartbeat failed; trying again every %g s", soon)
                failing = True
            else:
                if failing and renewed:  # (none held: nothing to say)
                    logger.warning("lease heartbeat renewed the leases again")
                failing = False

    def renew_leases(self) -> int:
        """Push back the lease of every row this process is running; return how many."""
        held = self._held.rows()
        if not held:
            return 0
        asked = time.monotonic()  # (the database's now is later: this errs early)
        with self.db(commit=True) as curs:
            curs.execute(f"update task set lease_until = {self.now_sql} + ? "
                         f"where lease_owner = ? and id in ({','.join('?' * len(held))}) "
                         "returning id", (self.lease_seconds, self.owner, *held))
            renewed = [row for row, in curs.fetchall()]
        self._held.renewed(renewed, asked + self.lease_seconds)
        return len(renewed)

    def _ending(self, rows: Iterable[int | None], write: Callable[[], T]) -> T:
        """Run *write*, the transaction that ends this process's runs on *rows*.

        While the queue database is away (:class:`Unavailable`: an outage, a deadlock
        it broke) the write is tried again as long as the rows' leases hold, the rows
        still held: the heartbeat renews them once the database is back, so a run that
        ended during an outage shorter than the lease keeps its outcome instead of
        running again. Short of the leases' lapse (or after a lease's length) it gives
        up and lets the rows go: the jobs run again, as a dead consumer's do. (Past the
        lapse another worker of this process, the same lease owner, could have leased a
        row again; a retried write would end that run.) A stopping consumer may wait on
        this up to a lease.
        """
        rows = [row for row in rows if row is not None]
        if not rows:
            return write()  # nothing of a run to keep: the caller's own error handling
        margin = min(2.0, self.lease_seconds / 10)  # a write's own time, a commit's
        pause, most = 0.1, time.monotonic() + self.lease_seconds
        try:
            while True:
                try:
                    written = write()
                except Unavailable as exc:
                    # (*most*: a database that renews the leases yet refuses the write)
                    until = min(most, self._held.lapses_at(rows)) - margin
                    if self._stop_beating.is_set() or time.monotonic() + pause > until:
                        raise
                    if not getattr(self._local, "again", False):
                        logger.warning("the end of a run could not be written (%s); trying "
                                       "again while its lease holds", exc.message)
                        self._local.again = True  # (:meth:`_lease_gone`)
                    time.sleep(pause)
                    pause = min(2 * pause, 2.0)
                else:
                    if getattr(self._local, "again", False):
                        logger.warning("the end of a run was written after all")
                    return written
        finally:
            self._local.again = False
            self._held.let_go(rows)

    def _end_lease(self, curs, row: int | None, job_id: str | None,
                   attempt: int | None = None, *, give_back: bool = False) -> bool:
        """Delete this thread's leased *row* (or, with *give_back*, clear its lease);
        False when the row no longer carries this run's lease, so nothing of this run
        may be written (:meth:`_lease_gone` says why).

        The lease owner is this process, which its worker threads share: after a lapse,
        another of them may have leased the row again. Its run has a higher *attempt*
        (the job's count, which each lease raises), so a run's lease is its row, this
        owner and the job still on the run's attempt.
        """
        if row is None:
            return True
        fence, params = "id = ? and lease_owner = ?", (row, self.owner)
        if attempt is not None:
            fence += f" and {RUN_FENCE}"
            params += (job_id, attempt)
        if give_back:
            if getattr(self._local, "again", False):
                # Not tried again: giving back lowered the job's count, so a run another
                # thread leased since a first try that committed has this one's number.
                # If that try failed, the lease lapses and the job runs again.
                logger.warning("job %s: its run was given back while the database was away "
                               "and is not given back again: it runs again once its lease "
                               "lapses", job_id)
                return False
            curs.execute(f"update task set lease_until = null, lease_owner = null "
                         f"where {fence}", params)
        else:
            curs.execute(f"delete from task where {fence}", params)
        return bool(curs.rowcount)

    def _lease_gone(self, curs, job_id: str | None, status: str | None = None,
                    attempt: int | None = None) -> jobs.EndedJob | None:
        """A run's row no longer carried this process's lease when its end was written.

        On a first try, the lease was lost: it lapsed (a stalled host) and another
        consumer took the row, whose newer attempt's outcome stands, or the job was
        canceled. On a write tried again (:meth:`_ending`), the row was ended by the
        earlier try, whose commit went through but whose answer was lost with the
        connection, or by another thread of this process that leased the row again
        (a row held twice stays held to the later lapse). The job record shows which:
        this run's end has *status*, this owner and this run's *attempt*; then the job
        is returned as ended, so its end hooks run once, now.
        """
        if getattr(self._local, "again", False):
            ended = jobs.ended_by(curs, job_id, status, self.owner, attempt) \
                if status else None
            if ended is not None or status is None:
                return ended
        logger.warning(LEASE_LOST, job_id)
        return None
