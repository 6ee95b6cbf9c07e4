"""Makes a real consumer's idle PostgreSQL workers wait 10 minutes between fallback polls,
so that only a NOTIFY (an enqueue, or the consumer's stop) ends a wait: for
tests/test_idle_polls.py. Loaded with ``QRQ_TASK_MODULES`` before the workers fork; on
SQLite it does nothing (its workers' waits are the poll schedule's)."""

from qrq.queue import huey

if huey.storage.database == "postgresql":
    huey.storage.idle_poll = 600.0
