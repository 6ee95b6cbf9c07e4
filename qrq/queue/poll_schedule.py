"""Idle SQLite workers take turns to poll the queue, so four poll as often as one.

SQLite cannot tell a process that a row was inserted (PostgreSQL's workers wait for a
``NOTIFY`` instead, :mod:`qrq.queue.wakeup`), so an idle worker polls. Polling each on
its own, a consumer's four workers cost four times the CPU of one while idle, and more
per job at any rate below their capacity, for a pickup barely faster.

Here a consumer's workers share one schedule of turns, *interval* seconds apart: after
an empty poll a worker claims the first free turn (one interval after the last turn
claimed, or after now) and sleeps until then. Idle, the workers poll in rotation, one
poll per interval in all, as a single worker would, and a job waits at most an interval
for its pickup, as with one worker. A worker that finds a job takes no turn: it runs the
job and polls again at once, so a drain runs at full speed; the others join a burst each
at its turn, within (workers - 1) intervals.

The schedule is memory the consumer creates before its workers fork (or that its worker
threads share). Claiming a turn takes a lock that the kernel drops when its holder dies
(:class:`~qrq.queue.process_lock.ProcessLock` on the memory's file), so a killed worker
never stalls the others; no turn is ever claimed further ahead than one per worker, so
a dead worker's turn merely passes unused. A wait ends at once when the consumer's stop
flag is set (SIGTERM, SIGINT, an orphaned worker).

While jobs flow, the worker that ran the last ones keeps the turns: a worker whose
last run ended less than a second ago (*warm*) claims the next interval for itself,
and a turn of another worker that comes while that warm worker is on time passes
without a poll (a look at shared memory, a fraction of a poll). So at a steady trickle
one process runs the jobs, its memory warm, instead of each job going to whichever
process had the turn: at 50 jobs/s that costs 4 workers 6% less CPU per job
(BENCHMARKS.md). A warm worker that is busy with a long run misses its
turn; the next turn of another worker then polls, so a job waits at most about one
and a half intervals for a free worker.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import weakref

from qrq.queue.process_lock import ProcessLock, shared_file

# The last turn claimed, in time.monotonic() seconds; the warm worker (its native
# thread id, unique on the host; 0: none) and its next turn.
_STATE = struct.Struct("dqd")


class PollSchedule:
    """Turns to poll, *interval* seconds apart, shared by up to *workers* workers (forked
    processes or threads); a wait for a turn ends early when *stop* (an object with
    ``wait(timeout)``, such as huey's stop flag) is set."""

    def __init__(self, interval: float, workers: int = 1, stop=None):
        self.interval = float(interval)
        self.workers = max(1, int(workers))
        self.stop = stop if stop is not None else threading.Event()
        fd = shared_file("qrq-poll-schedule")
        weakref.finalize(self, os.close, fd)
        os.ftruncate(fd, _STATE.size)
        self._shared = mmap.mmap(fd, _STATE.size)
        self._lock = ProcessLock(fd=fd)

    def wait_turn(self, warm: bool = False) -> None:
        """After an empty poll: claim the next free turn and wait for it (or the stop
        flag); a turn that the warm worker covers passes, and the wait goes on. *warm*:
        this worker's last run ended recently."""
        while not self.stop.is_set():
            delay = self.claim(warm) - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            if not self.covered():
                return
            warm = False

    def claim(self, warm: bool = False) -> float:
        """Claim a turn: its time (``time.monotonic()``, which all processes of a host
        share). A *warm* worker takes the next interval as the warm turn, unless another
        worker holds it and is less than an interval late; any other takes the first
        free turn of the rotation."""
        me = threading.get_native_id()
        with self._lock:
            now = time.monotonic()
            last, holder, due = _STATE.unpack_from(self._shared)
            if warm and (holder in (0, me) or now > due + self.interval):
                _STATE.pack_into(self._shared, 0, last, me, now + self.interval)
                return now + self.interval
            if holder == me:  # cooled down: back into the rotation
                holder = 0
            # Never further ahead than one turn per worker: the claims of workers that
            # died (or started since) cannot push the schedule away.
            turn = min(max(last, now) + self.interval, now + self.interval * self.workers)
            _STATE.pack_into(self._shared, 0, turn, holder, due)
        return turn

    def covered(self) -> bool:
        """Whether another worker holds the warm turn and is on time for it (late by
        less than half an interval: a poll and a short batch)."""
        with self._lock:
            _, holder, due = _STATE.unpack_from(self._shared)
        return holder not in (0, threading.get_native_id()) \
            and time.monotonic() <= due + self.interval / 2
