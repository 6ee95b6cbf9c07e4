"""Idle workers wake when a job is enqueued: PostgreSQL's ``LISTEN/NOTIFY``.

An enqueue (and the scheduler moving due rows) sends ``pg_notify`` on the queue's
channel in its transaction, delivered when it commits. Each process has one
listening connection, on a thread of its own; its worker threads wait on a
condition the listener signals. Nothing notifies when a lease lapses, so the wait
has a timeout: the slow poll that picks up a dead consumer's jobs.
"""

from __future__ import annotations

import logging
import os
import threading

import psycopg

logger = logging.getLogger("qrq.queue.wakeup")

RETRY = 1.0  # seconds between attempts to listen again after the connection failed


class Listener:
    """``LISTEN channel`` on a connection of its own; :meth:`wait` until a
    notification (or a reconnection, after which anything may be waiting)."""

    def __init__(self, url: str, channel: str):
        self.url = url
        self.channel = channel
        self.heard = 0  # notifications (and reconnections) so far
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._pid = None
        self._thread = None

    def start(self) -> None:
        """Start listening in this process (again after a fork: threads do not follow)."""
        if self._pid == os.getpid() and self._thread is not None:
            return
        with self._changed:
            if self._pid == os.getpid() and self._thread is not None:
                return
            self._pid = os.getpid()
            self._changed = threading.Condition()
            self._thread = threading.Thread(target=self._listen, name="qrq-listen",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def wait(self, heard: int, timeout: float) -> None:
        """Return when something was heard after *heard*, or after *timeout* seconds."""
        self.start()
        with self._changed:
            if self.heard == heard:
                self._changed.wait(timeout)

    def wake(self) -> None:
        """Wake every waiter in this process: something was heard (a notification, a
        reconnection), or they must stop."""
        with self._changed:
            self.heard += 1
            self._changed.notify_all()

    def _listen(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f'listen "{self.channel}"')
                    if failing:
                        logger.debug("listening for new jobs again")
                        failing = False
                    self.wake()  # rows may have come while no one listened
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=5.0):
                            self.wake()
            except psycopg.Error as exc:
                if not failing:  # the storage's own errors tell the operator (once)
                    logger.debug("cannot listen for new jobs (%s); polling until the "
                                 "database is back", " ".join(str(exc).split()))
                    failing = True
                self.wake()  # let the workers poll (and report the outage) meanwhile
                self._stopped.wait(RETRY)
