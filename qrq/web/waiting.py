"""Waiting for a job without polling: ``?wait=SECONDS`` and the Server-Sent Events stream.

One watcher thread per web process reads the state of every job someone waits
for, all in one query every :data:`POLL_SECONDS`, and calls back the waiters
whose job changed (or whose deadline passed). A waiter holds no database
connection while it waits.

Nor does it hold a server thread under qrq's own server (``qrq serve``,
:mod:`qrq.web.server`): that server offers *parking* in the WSGI environ. A
long-poll parks its request (:func:`park_request`) and is run again, as new, when
woken; an event stream's body yields :class:`Park` between events and goes on when
woken. Under any other WSGI server (gunicorn, plain ``waitress-serve``, the test
client) a waiter blocks its thread instead, so at most ``QRQ_MAX_WAITERS`` wait
at once (:class:`WaiterSlots`); more are answered at once with the current state
and ``Retry-After``, so waiting clients never starve such a server of threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qrq.errors import Unavailable

logger = logging.getLogger("qrq.web")

POLL_SECONDS = 0.15
MAX_WAIT_SECONDS = 60
# While reads fail (the database is down: every poll, ~7 a second), one line this often.
LOG_SECONDS = 60.0
State = tuple | None  # (status, progress, stage); None: no such job (any more)
Wake = Callable[[], None]
Changed = Callable[[State, State], bool]

# The parking protocol between the app and qrq's server, as WSGI environ keys.
PARK_KEY = "qrq.park"    # a callable(subscribe): park this request, run it again when woken
WOKEN_KEY = "qrq.woken"  # True in the environ of a request run again after it was parked


@dataclass(frozen=True)
class Park:
    """A value a response body yields under qrq's server: the stream pauses there,
    holding no thread, until ``subscribe(wake)``'s *wake* is called, then goes on."""

    subscribe: Callable[[Wake], None]


def can_park(environ: dict) -> bool:
    """Whether the server can park this request (qrq's server does)."""
    return PARK_KEY in environ


def woken(environ: dict) -> bool:
    """Whether this request is run again after waiting parked (it must not wait again)."""
    return bool(environ.get(WOKEN_KEY))


def park_request(environ: dict, subscribe: Callable[[Wake], None]) -> None:
    """Ask qrq's server to drop this request's answer, free its thread and run the
    request again, as new, once ``subscribe(wake)``'s *wake* is called."""
    environ[PARK_KEY](subscribe)


def _any_change(old: State, new: State) -> bool:
    return old != new


@dataclass(eq=False)
class _Watch:
    job_id: str
    seen: State
    deadline: float
    changed: Changed
    wake: Wake = field(repr=False)


class JobWatcher:
    """Calls waiters back when the state of the job they wait for changes."""

    def __init__(self, read_states: Callable[[list[str]], dict[str, tuple]],
                 interval: float = POLL_SECONDS):
        self._read_states = read_states
        self._interval = interval
        self._failing_since: float | None = None  # monotonic: reads fail since then
        self._logged_at = 0.0  # monotonic: the last line about it
        self._cond = threading.Condition()
        self._watches: list[_Watch] = []
        self._thread: threading.Thread | None = None

    def waiting(self, job_id: str | None = None) -> int:
        """How many waiters (for *job_id*, or in all) are registered now."""
        with self._cond:
            return sum(1 for w in self._watches if job_id in (None, w.job_id))

    def watch(self, job_id: str, seen: State, timeout: float, wake: Wake,
              changed: Changed | None = None) -> None:
        """Call *wake* once (from the watcher's thread): when the job's state differs
        from *seen* by *changed* (default: any difference), or after *timeout* seconds.
        *wake* must return at once."""
        entry = _Watch(job_id, seen, time.monotonic() + timeout, changed or _any_change, wake)
        with self._cond:
            self._watches.append(entry)
            self._start()
            self._cond.notify_all()  # the watcher may be idle, waiting for a first watch

    def subscriber(self, job_id: str, seen: State, timeout: float,
                   changed: Changed | None = None) -> Callable[[Wake], None]:
        """:meth:`watch` with everything but *wake* given: a :class:`Park`'s subscribe."""
        return lambda wake: self.watch(job_id, seen, timeout, wake, changed)

    def wait_change(self, job_id: str, seen: State, timeout: float,
                    changed: Changed | None = None) -> None:
        """Block up to *timeout* seconds until the job's state differs from *seen*."""
        done = threading.Event()
        self.watch(job_id, seen, timeout, done.set, changed)
        done.wait(timeout + 5 * self._interval + 1)  # the watcher wakes it by the deadline

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="qrq-job-watcher",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._watches:
                    self._cond.wait()
                ids = {w.job_id for w in self._watches}
            states = self._read(list(ids))  # None: failed; deadlines still pass
            now = time.monotonic()
            with self._cond:
                due, keep = [], []
                for entry in self._watches:
                    changed = states is not None and entry.job_id in ids and entry.changed(
                        entry.seen, states.get(entry.job_id))
                    (due if changed or entry.deadline <= now else keep).append(entry)
                self._watches = keep
                # One interval, or less up to the next deadline (watches added meanwhile
                # are read next round: their ids were not in this one).
                nap = min([self._interval, *(e.deadline - now for e in keep)])
            for entry in due:
                try:
                    entry.wake()
                except Exception:
                    logger.exception("a job waiter could not be woken")
            if nap > 0:
                time.sleep(nap)

    def _read(self, ids: list[str]) -> dict[str, tuple] | None:
        """The states of *ids*, or None when they cannot be read. A failure is logged
        when it starts and at most once a :data:`LOG_SECONDS` while it lasts (with its
        traceback only when unexpected: a bug); the first read that works says so."""
        try:
            states = self._read_states(ids)
        except Exception as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            elif now - self._logged_at < LOG_SECONDS:
                return None
            self._logged_at = now
            if isinstance(exc, Unavailable):  # an outage: its reason is enough
                logger.error("job watcher could not read job states: %s (logged once a "
                             "minute while it lasts; waiters are answered at their "
                             "deadlines)", exc)
            else:
                logger.exception("job watcher could not read job states (logged once a "
                                 "minute while it lasts)")
            return None
        if self._failing_since is not None:
            logger.warning("job watcher reads job states again (they failed for %.0fs)",
                           time.monotonic() - self._failing_since)
            self._failing_since = None
        return states


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
