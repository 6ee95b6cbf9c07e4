"""Runs ahead: while jobs run short, a consumer's worker leases several at once and
writes their ends together, one commit for the batch instead of one per job.

A commit writes every page its statements changed (a job's end and the next job's
lease change about eight), and that write was most of what a short job cost. So a
worker's completion leases as many rows as it would run in :data:`BATCH_SECONDS` at the
pace of the run that just ended (at most :data:`BATCH_MAX`), and so does a poll that
finds work after a short run; the ends of those runs wait in memory for the commit that
ends the batch and leases the next.

Nothing is lost by waiting: a run whose end is not written yet keeps its lease (the
heartbeat renews it), so if the process dies the lease lapses and the job runs again,
as any job of a dead consumer does. And nothing waits long: a thread of the process
writes the ends that waited :data:`END_DELAY` seconds (a run after them is taking
long), and gives back the rows leased ahead of a run that has gone on that long, so
other workers take them. That thread sleeps on an :class:`~qrq.queue.alarm.Alarm` that
the workers set when a batch starts waiting and clear when none does: a batch that ends
in time never wakes it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref

from qrq.queue import jobs
from qrq.queue.alarm import Alarm

logger = logging.getLogger("qrq.queue.storage")

BATCH_MAX = 16  # rows a completion leases ahead, at most
BATCH_SECONDS = 0.01  # a batch holds about this much running, at the last run's pace
END_DELAY = 0.05  # seconds an end waits unwritten (and rows wait behind a run), at most
# A poll leases a batch only this soon after the thread's last run ended: a stream of
# short jobs, not a burst after an idle spell, which may be of other jobs.
RECENT = 1.0


def batch_size(ran: float) -> int:
    """How many rows to lease after a run that took *ran* seconds."""
    return max(1, min(BATCH_MAX, int(BATCH_SECONDS / max(ran, 1e-4))))


class _Batch:
    """One worker thread's rows leased ahead and runs ended but not yet written."""

    __slots__ = ("ahead", "ended", "ended_since", "running_since", "last_ran", "last_ended",
                 "__weakref__")

    def __init__(self):
        self.ahead = collections.deque()  # (row, data, job_id, first, attempt), in order
        self.ended = []  # (row, job_id, outcome, first, attempt)
        self.ended_since = None  # time.monotonic() when the oldest of ended ended
        self.running_since = None  # when this thread's current run was handed out
        self.last_ran = None  # seconds the thread's last completed run took
        self.last_ended = 0.0  # when it ended (time.monotonic())


class RunAhead:
    """Mixed into :class:`qrq.queue.storage.LeasedStorage`, which provides ``db``,
    ``owner``, ``_local`` (per thread), ``_held``, ``_hold``, ``_end_run``,
    ``_give_back``, ``_lease_next``, ``_notify`` and ``_stop_beating``."""

    # Called with the jobs that the flusher thread or a stopping worker ended (a list of
    # EndedJob); QrqHuey runs its end hooks on them. Completions return theirs instead.
    ended_hook = None

    def _reset_batches(self) -> None:
        """Per process (a forked worker starts empty, with a lock no one holds)."""
        # Each worker thread's batch, for the flusher; one goes with its thread.
        self._batches: weakref.WeakSet[_Batch] = weakref.WeakSet()
        self._batches_lock = threading.Lock()
        self._flusher = None
        self._alarm = None  # the flusher's, made with it
        # When the flusher looks next (None: nothing waits), the alarm's deadline. Nothing
        # a worker adds is due before that, so workers set it only when it is None.
        self._flush_due = None

    def _batch(self) -> _Batch:
        """This thread's batch."""
        batch = getattr(self._local, "batch", None)
        if batch is None:
            batch = self._local.batch = _Batch()
            with self._batches_lock:
                self._batches.add(batch)
        return batch

    def _next_ahead(self, batch: _Batch) -> tuple | None:
        """The next row this thread leased ahead, now running; None when none is left."""
        with self._batches_lock:
            leased = batch.ahead.popleft() if batch.ahead else None
            batch.running_since = time.monotonic()
        return leased

    def _take_ended(self, batch: _Batch) -> list[tuple]:
        """The runs of *batch* whose ends wait, for the caller's transaction to write."""
        with self._batches_lock:
            ended, batch.ended, batch.ended_since = batch.ended, [], None
            self._clear_alarm()
        return ended  # (held until written: LeaseHolder._ending)

    def _clear_alarm(self) -> None:
        """(Under the batches' lock.) When no batch has an end waiting or a row leased
        ahead, the flusher has nothing to look at: its alarm is cleared."""
        if self._flush_due is not None and not any(
                batch.ended or batch.ahead for batch in self._batches):
            self._flush_due = None
            self._alarm.set(None)

    def _defer_end(self, batch: _Batch, run: tuple, ran: float) -> bool:
        """Keep *run*'s end for the batch's commit, if more rows of the batch wait and
        the run was short; False: the caller writes it now."""
        row, job_id, outcome, first, attempt = run
        if ran >= END_DELAY or row is None or outcome is None:
            return False
        with self._batches_lock:
            if not batch.ahead:
                return False
            if not batch.ended:
                batch.ended_since = time.monotonic()
                self._wake_flusher()
            # The job's finished_at is when it ended, not when that is written.
            batch.ended.append((row, job_id, {"now": time.time(), **outcome}, first, attempt))
        return True

    def _end_runs(self, curs, runs: list[tuple]) -> list[jobs.EndedJob]:
        ended = (self._end_run(curs, *run) for run in runs)
        return [job for job in ended if job is not None]

    def _lease_ahead(self, curs, count: int) -> list[tuple]:
        """Lease up to *count* rows in *curs*'s transaction; :meth:`_keep_ahead` holds
        them once it commits."""
        leased = []
        while len(leased) < count and (row := self._lease_next(curs, self.owner)) is not None:
            leased.append(row)
        return leased

    def _keep_ahead(self, batch: _Batch, leased: list[tuple]) -> None:
        for row in leased:
            self._hold(row)
        if len(leased) > 1:
            self._ensure_flusher()
        if leased:
            with self._batches_lock:
                batch.ahead.extend(leased)
                if len(batch.ahead) > 1:
                    self._wake_flusher()

    def give_back_ahead(self) -> None:
        """The worker is stopping: write the ends its batch kept, and give back the rows
        it leased ahead, so they run at once elsewhere rather than when their leases
        lapse."""
        batch = self._batch()
        with self._batches_lock:
            back = list(batch.ahead)
            batch.ahead.clear()
        self._write_late(self._take_ended(batch), back)

    def _write_late(self, ended_runs: list[tuple], back: list[tuple]) -> None:
        """Write *ended_runs*' ends and give back the leased rows *back*, in one
        transaction; then run the end hooks."""
        if not ended_runs and not back:
            return

        def write() -> list[jobs.EndedJob]:
            with self.db(commit=True) as curs:
                ended = self._end_runs(curs, ended_runs)
                for row, _, job_id, first, attempt in back:
                    self._give_back(curs, row, job_id, first, attempt)
                if back:
                    self._notify(curs)
            return ended

        self._report_ended(self._ending([r[0] for r in [*ended_runs, *back]], write))

    def _report_ended(self, ended: list[jobs.EndedJob]) -> None:
        """Hand ends written outside a completion to :attr:`ended_hook`."""
        if ended and self.ended_hook is not None:
            self.ended_hook(ended)

    # -- the flusher: a thread per process that writes what waited too long ------------

    def stop_heartbeat(self) -> None:
        super().stop_heartbeat()
        if self._alarm is not None:
            self._alarm.wake()  # the flusher stops too

    def _wake_flusher(self) -> None:
        """(Under the batches' lock.) Something waits: the flusher looks at it within
        :data:`END_DELAY` seconds."""
        if self._flush_due is None:
            self._flush_due = time.monotonic() + END_DELAY
            self._alarm.set(self._flush_due)

    def _ensure_flusher(self) -> None:
        with self._batches_lock:
            if self._alarm is None:
                self._alarm = Alarm()
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_late, args=(self.owner,),
                                             name="qrq-run-ahead", daemon=True)
            self._flusher.start()

    def _flush_late(self, owner: str) -> None:
        while not self._stop_beating.is_set() and owner == self._owner:
            ended_runs, back = self._overdue(time.monotonic())
            if ended_runs or back:
                try:
                    self._write_late(ended_runs, back)
                except Exception:  # their leases lapse and the jobs run again
                    logger.exception("writing the ends of a batch failed")
                continue
            self._alarm.wait()

    def _overdue(self, now: float) -> tuple[list, list]:
        """Take the ends that waited :data:`END_DELAY`, and the rows leased ahead of a
        run that has gone on that long; if there are none, set the alarm for the next
        (cleared: nothing waits)."""
        ended_runs, back, due = [], [], None
        with self._batches_lock:
            for batch in self._batches:
                if batch.ended:
                    if now - batch.ended_since >= END_DELAY:
                        ended_runs += batch.ended
                        batch.ended, batch.ended_since = [], None
                    else:
                        due = min(due or now + END_DELAY, batch.ended_since + END_DELAY)
                if batch.ahead:
                    since = batch.running_since or now
                    if now - since >= END_DELAY:
                        back += batch.ahead
                        batch.ahead.clear()
                    else:
                        due = min(due or now + END_DELAY, since + END_DELAY)
            if ended_runs or back:
                self._flush_due = now  # the flusher looks again once it wrote them
            else:
                self._flush_due = due
                self._alarm.set(due)
        return ended_runs, back
