"""Waiting for a job without polling: ``?wait=SECONDS`` and the Server-Sent Events stream.

One watcher thread per web process reads the state of every job someone waits
for, all in one query every :data:`POLL_SECONDS`, and wakes the waiters whose
job changed. A waiting request holds no database connection while it waits: it
sleeps on the watcher's condition. It does hold its server thread (waitress
serves a request on one thread from start to end), so the number of requests
waiting at once is capped by ``QRQ_MAX_WAITERS``, kept below the server's thread
count: a waiter over the cap is answered at once with the current state (and
``Retry-After``), so waiting clients can never starve the server of threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

logger = logging.getLogger("qrq.web")

POLL_SECONDS = 0.15
MAX_WAIT_SECONDS = 60
State = tuple | None  # (status, progress, stage); None: no such job (any more)


class JobWatcher:
    """Wakes waiters when the state of the job they wait for changes."""

    def __init__(self, read_states: Callable[[list[str]], dict[str, tuple]],
                 interval: float = POLL_SECONDS):
        self._read_states = read_states
        self._interval = interval
        self._cond = threading.Condition()
        self._waiting: Counter[str] = Counter()
        self._states: dict[str, State] = {}
        self._thread: threading.Thread | None = None

    def wait_change(self, job_id: str, seen: State, timeout: float,
                    changed: Callable[[State, State], bool] | None = None) -> State:
        """Block up to *timeout* seconds until the job's state differs from *seen*
        (by *changed*, default: any difference); return the last state read."""
        changed = changed or (lambda old, new: old != new)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting[job_id] += 1
            self._start()
            self._cond.notify_all()  # the watcher may be idle, waiting for a first waiter
            try:
                while True:
                    state = self._states.get(job_id, seen)
                    left = deadline - time.monotonic()
                    if changed(seen, state) or left <= 0:
                        return state
                    self._cond.wait(left)
            finally:
                self._waiting[job_id] -= 1
                if not self._waiting[job_id]:
                    del self._waiting[job_id]
                    self._states.pop(job_id, None)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="qrq-job-watcher",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                ids = list(self._waiting)
            try:
                states = self._read_states(ids)
            except Exception:  # a locked or swapped database: try again next round
                logger.exception("job watcher could not read job states")
                states = None
            if states is not None:
                with self._cond:
                    for job_id in ids:
                        if job_id in self._waiting:
                            self._states[job_id] = states.get(job_id)
                    self._cond.notify_all()
            time.sleep(self._interval)


class WaiterSlots:
    """At most *limit* requests waiting at once (non-blocking: over it, don't wait)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self.in_use = 0

    def take(self) -> bool:
        with self._lock:
            if self.in_use >= self.limit:
                return False
            self.in_use += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1
