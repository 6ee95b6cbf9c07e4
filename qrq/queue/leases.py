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

logger = logging.getLogger("qrq.queue.storage")
T = TypeVar("T")
LEASE_LOST = ("job %s: this run lost its lease (it lapsed and the job was taken over or "
              "canceled); its outcome is dropped")

_OWNER_LOCK = threading.Lock()


def _new_owner_lock() -> None:
    # A forked child must not inherit the lock in a held state.
    global _OWNER_LOCK
    _OWNER_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_owner_lock)


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
        self._held = set()
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
        held = list(self._held)
        if not held:
            return 0
        with self.db(commit=True) as curs:
            curs.execute(f"update task set lease_until = {self.now_sql} + ? "
                         f"where lease_owner = ? and id in ({','.join('?' * len(held))})",
                         (self.lease_seconds, self.owner, *held))
            return curs.rowcount

    def _ending(self, rows: Iterable[int | None], write: Callable[[], T]) -> T:
        """Run *write*, the transaction that ends this process's runs on *rows*.

        While the queue database is away (:class:`Unavailable`: an outage, a deadlock
        it broke) the write is tried again for up to a lease's length, the rows still
        held: the heartbeat renews their leases once the database is back, so a run
        that ended during a short outage keeps its outcome instead of running again.
        Then (or when this process stops) the rows are let go: their leases lapse and
        the jobs run again, as a dead consumer's do. A retried write finds any lease
        it lost meanwhile (:data:`LEASE_LOST`) and writes nothing.
        """
        rows = [row for row in rows if row is not None]
        if not rows:
            return write()  # nothing of a run to keep: the caller's own error handling
        deadline, pause, warned = time.monotonic() + self.lease_seconds, 0.1, False
        try:
            while True:
                try:
                    return write()
                except Unavailable as exc:
                    if self._stop_beating.is_set() or time.monotonic() + pause > deadline:
                        raise
                    if not warned:
                        logger.warning("the end of a run could not be written (%s); trying "
                                       "again for up to %g s", exc.message, self.lease_seconds)
                        warned = True
                    time.sleep(pause)
                    pause = min(2 * pause, 2.0)
        finally:
            for row in rows:
                self._held.discard(row)

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
            curs.execute("delete from task where id = ? and lease_owner = ?", (row, self.owner))
        if curs.rowcount:
            return True
        logger.warning(LEASE_LOST, job_id)
        return False
