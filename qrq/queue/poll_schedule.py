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
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import weakref

from qrq.queue.process_lock import ProcessLock, shared_file

_TURN = struct.Struct("d")  # the last turn claimed, in time.monotonic() seconds


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
        os.ftruncate(fd, _TURN.size)
        self._shared = mmap.mmap(fd, _TURN.size)
        self._lock = ProcessLock(fd=fd)

    def wait_turn(self) -> None:
        """After an empty poll: claim the next free turn and wait for it (or the stop flag)."""
        delay = self.claim() - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def claim(self) -> float:
        """Claim the first free turn: its time (``time.monotonic()``, which all processes
        of a host share)."""
        with self._lock:
            now = time.monotonic()
            last = _TURN.unpack_from(self._shared)[0]
            # Never further ahead than one turn per worker: the claims of workers that
            # died (or started since) cannot push the schedule away.
            turn = min(max(last, now) + self.interval, now + self.interval * self.workers)
            _TURN.pack_into(self._shared, 0, turn)
        return turn
