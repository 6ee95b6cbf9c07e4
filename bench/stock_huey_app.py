"""Stock huey for bench/pickup.py: a plain ``SqliteHuey`` with its defaults and a no-op task.

The consumer runs it as ``huey_consumer stock_huey_app.huey`` with ``bench/`` on the path;
the database file comes from ``BENCH_STOCK_DB``.
"""

import os
import time

from huey import SqliteHuey

huey = SqliteHuey("stock", filename=os.environ["BENCH_STOCK_DB"])


@huey.task()
def stamp() -> float:
    """Do nothing but say when it started (the consumer's clock, seconds since the epoch)."""
    return time.time()
