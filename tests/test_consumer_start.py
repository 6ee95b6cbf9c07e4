"""A consumer's start: its row is in the consumer table before any worker runs."""

import logging
import signal

from qrq.queue import huey
from qrq.queue.consumer import QrqConsumer, StorageFullLog


def test_a_consumer_is_registered_before_its_workers_start(settings):
    consumer = QrqConsumer(huey, workers=2, worker_type="thread", periodic=False)
    seen = []

    def looking_first(start):
        """A worker thread's *start* that first notes the consumer rows of that moment."""
        def observed():
            seen.append(huey.storage.sql("select id from consumer", results=True))
            start()
        return observed

    for _, thread in consumer.worker_threads:
        thread.start = looking_first(thread.start)
    # What start() sets for the whole process, put back after (this is pytest's process).
    handlers = {signum: signal.getsignal(signum) for signum in consumer._signal_actions}
    pool_level = logging.getLogger("psycopg.pool").level
    try:
        consumer.start()
    finally:
        consumer.stop(graceful=True)
        consumer._beating.set()  # the heartbeat thread (run() does this on exit)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        logging.getLogger("psycopg.pool").setLevel(pool_level)
        for handler in {*logging.getLogger().handlers, *logging.getLogger("huey").handlers,
                        logging.lastResort}:
            for one in [f for f in getattr(handler, "filters", ()) if isinstance(
                    f, StorageFullLog)]:
                handler.removeFilter(one)
    assert [[tuple(row) for row in rows] for rows in seen] == [[(consumer.consumer_id,)]] * 2
