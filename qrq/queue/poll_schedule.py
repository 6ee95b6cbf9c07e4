"""One idle SQLite worker polls the queue for a consumer's workers; the others sleep.

SQLite cannot tell a process that a row was inserted (PostgreSQL's workers wait for a
``NOTIFY`` instead, :mod:`qrq.queue.wakeup`), so an idle worker polls. Polling each on
its own, a consumer's four workers cost four times the CPU of one while idle, and more
per job at any rate below their capacity, for a pickup barely faster. Taking turns to
poll (one poll per interval in all, each in the next process) still cost 4 workers about
4% more CPU per job than 1 at 50 jobs/s: each poll woke a process that had slept for
four intervals (BENCHMARKS.md). So one worker, the *lead*, polls every *interval* seconds, and the
others are *parked*: they sleep until the lead needs them.

* The lead runs what its polls find, and after a run polls again at once.
* A poll that leases all it asked for (more may wait: a burst) wakes one parked worker,
  which polls at once and, if it leases all it asked for too, wakes the next.
* A run of the lead's that goes on for an *interval* (a long job) hands the lead over:
  a thread of the lead's process wakes at that moment, gives the lead up and wakes a
  parked worker, which becomes the lead. So a job waits at most about two intervals for
  a free worker.
* A lead that is more than an interval late (killed, or busy: the hand-over failed) is
  replaced by the first worker that looks, and parked workers look once a
  :data:`PARKED_WAIT`.

The schedule is memory and a pipe that the consumer creates before its workers fork (or
that its worker threads share): the memory says who leads and when it polls next, and a
parked worker waits to read a byte from the pipe. Changing the memory takes a lock that
the kernel drops when its holder dies (:class:`~qrq.queue.process_lock.ProcessLock`), so
a killed worker never stalls the others. A wait ends soon after the consumer's stop
flag is set (SIGTERM, SIGINT, an orphaned worker): whoever sets it calls
:meth:`PollSchedule.stop_waiting`, and each parked worker that sees it wakes the next.
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import struct
import threading
import time
import weakref

from qrq.queue.alarm import Alarm, close_fds
from qrq.queue.process_lock import ProcessLock, shared_file

logger = logging.getLogger("qrq.queue.poll_schedule")

_LEAD = struct.Struct("qd")  # the lead's thread id (0: none) and when it polls next
PARKED_WAIT = 1.0  # seconds a parked worker sleeps before it looks at the lead again

# A forked worker makes its own hand-over thread (threads do not follow a fork).
_SCHEDULES = weakref.WeakSet()
_MAKING = threading.Lock()


def _forget_handovers() -> None:
    global _MAKING
    _MAKING = threading.Lock()
    for schedule in _SCHEDULES:
        schedule._handover = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_handovers)


def _me() -> int:
    """This worker: its native thread id, unique on the host (process or thread workers)."""
    return threading.get_native_id()


class PollSchedule:
    """The lead's polls, *interval* seconds apart, for up to *workers* workers (forked
    processes or threads); a wait ends early when *stop* (an object with
    ``wait(timeout)`` and ``is_set()``, such as huey's stop flag) is set."""

    def __init__(self, interval: float, workers: int = 1, stop=None):
        self.interval = float(interval)
        self.workers = max(1, int(workers))
        self.stop = stop if stop is not None else threading.Event()
        fd = shared_file("qrq-poll-schedule")
        self._wake_read, self._wake_write = os.pipe()
        for end in (self._wake_read, self._wake_write):
            os.set_blocking(end, False)
        weakref.finalize(self, close_fds, fd, self._wake_read, self._wake_write)
        os.ftruncate(fd, _LEAD.size)
        self._shared = mmap.mmap(fd, _LEAD.size)
        self._lock = ProcessLock(fd=fd)
        self._handover = None  # this process's _Handover, made by its first lead
        _SCHEDULES.add(self)

    def wait_to_poll(self) -> None:
        """After an empty poll: as the lead, wait an interval; else park until woken (to
        help with a burst, or to lead) or until the lead is late. Then poll."""
        me = _me()
        self._disarm(me)
        while not self.stop.is_set():
            if self.lead(me):
                self._sleep(self.interval)
                return
            if self._sleep(PARKED_WAIT):
                self.lead(me)  # handed over (or late): poll as the lead from now on
                return

    def lead(self, me: int | None = None) -> bool:
        """Take the lead if no one holds it or its holder is late; whether *me* (this
        worker) leads now, with its next poll an interval away."""
        me = me or _me()
        with self._lock:
            holder, due = _LEAD.unpack_from(self._shared)
            now = time.monotonic()
            if holder not in (0, me) and now <= due + self.interval:
                return False
            _LEAD.pack_into(self._shared, 0, me, now + self.interval)
        return True

    def found_work(self, all_asked: bool) -> None:
        """A poll of this worker's leased work; *all_asked*: as many rows as it asked for,
        so more may wait. Wakes a parked worker for that, and as the lead arms the
        hand-over in case this run goes on for an interval."""
        if self.workers == 1:
            return
        if all_asked:
            self.wake()
        me = _me()
        lead, due = _LEAD.unpack_from(self._shared)
        if lead == me:  # only this worker writes its own id
            try:
                self._arm(me, due)
            except Exception:  # no thread or descriptor left: a late lead is replaced anyway
                logger.exception("cannot arm the hand-over of the polls")

    def wake(self, workers: int = 1) -> None:
        """Wake *workers* parked workers (a byte each; one left in the pipe makes the
        next worker that parks poll once more, which is harmless)."""
        try:
            os.write(self._wake_write, b"w" * workers)
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def stop_waiting(self) -> None:
        """After the stop flag was set: end the waits of parked workers at once."""
        self.wake(self.workers)

    def _sleep(self, seconds: float) -> bool:
        """Sleep until woken (True: poll now) or *seconds* passed (False)."""
        poll = select.poll()
        poll.register(self._wake_read, select.POLLIN)
        if not poll.poll(seconds * 1000):
            return False
        try:
            os.read(self._wake_read, 1)
        except BlockingIOError:
            return False  # another parked worker took that byte
        if self.stop.is_set():
            self.wake()  # the next parked worker sees the stop flag too
        return True

    # The hand-over of a lead whose run goes on for an interval (_Handover).

    def _arm(self, me: int, due: float) -> None:
        if self._handover is None:
            with _MAKING:
                if self._handover is None:
                    self._handover = _Handover(self)
        handover = self._handover
        with handover.lock:
            handover.armed = (me, due)
            handover.alarm.set(time.monotonic() + self.interval)

    def _disarm(self, me: int) -> None:
        handover = self._handover
        if handover is not None and handover.armed and handover.armed[0] == me:
            with handover.lock:
                if handover.armed and handover.armed[0] == me:
                    handover.armed = None
                    handover.alarm.set(None)

    def _release(self, lead: int, due: float) -> None:
        """Give up the lead *lead* claimed (due at *due*: not a claim it renewed since)
        and wake a parked worker to take it."""
        with self._lock:
            if _LEAD.unpack_from(self._shared) == (lead, due):
                _LEAD.pack_into(self._shared, 0, 0, 0.0)
        self.wake()


class _Handover:
    """A process's hand-over: a thread sleeps on an alarm that the lead sets when a poll
    finds work and clears at its next empty poll; nearly every run ends before it."""

    def __init__(self, schedule: PollSchedule):
        self.alarm = Alarm()
        self.lock = threading.Lock()
        self.armed = None  # (the lead's id, when its claim was due) while armed
        threading.Thread(target=self._run, args=(weakref.ref(schedule),), daemon=True,
                         name="qrq-poll-handover").start()

    def _run(self, schedule_ref) -> None:
        while True:
            self.alarm.wait()
            with self.lock:
                armed, deadline = self.armed, self.alarm.deadline
                if armed is None or deadline is None or time.monotonic() < deadline:
                    continue  # cleared, moved, or a wake of the Event fallback
                self.armed = None
                self.alarm.set(None)
            schedule = schedule_ref()
            if schedule is None:
                return
            schedule._release(*armed)
            del schedule
