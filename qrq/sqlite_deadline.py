"""Stop a long SQLite query at a deadline, or when asked to stop.

A signal cannot interrupt SQLite's C code, so a time limit or a cancel would wait for
the query to end by itself. A progress handler can: SQLite calls it every *every*
virtual-machine steps, and a true answer aborts the statement with
``sqlite3.OperationalError("interrupted")`` (callers recognise it by "interrupt" in
the message). The one implementation for the queue, the job types and the consumer's
maintenance; it imports nothing of qrq, so every layer (and the analytics child
processes, which must not open the queue database) can use it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

EVERY = 10_000  # virtual-machine steps between checks: well under 1 ms of work


@contextlib.contextmanager
def interrupt_when(conn: sqlite3.Connection, stop: Callable[[], bool],
                   every: int = EVERY) -> Iterator[sqlite3.Connection]:
    """Within the block, a query on *conn* stops once ``stop()`` is true.

    A connection has one progress handler: this one replaces any other for the block,
    and none is left behind.
    """
    conn.set_progress_handler(stop, every)  # called bare: no wrapper per check
    try:
        yield conn
    finally:
        conn.set_progress_handler(None, 0)


def past(deadline: float) -> Callable[[], bool]:
    """A *stop* for :func:`interrupt_when`: true once ``time.monotonic()`` reaches
    *deadline*."""
    return lambda: time.monotonic() >= deadline
