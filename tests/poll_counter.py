"""Counts a real consumer's dequeues, for tests/test_idle_polls.py.

Loaded into ``huey_consumer`` with ``QRQ_TASK_MODULES=tests.poll_counter`` (before the
workers fork), it appends one byte to the file ``QRQ_TEST_POLL_LOG`` at every dequeue of
every worker: each an ``O_APPEND`` write, so the file's size is the count across processes.
"""

import os

from qrq.queue import huey

_log = os.open(os.environ["QRQ_TEST_POLL_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
_dequeue = huey.storage.dequeue


def _counted_dequeue():
    os.write(_log, b".")
    return _dequeue()


huey.storage.dequeue = _counted_dequeue
