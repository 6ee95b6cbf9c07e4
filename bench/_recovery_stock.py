"""Stock huey for bench/recovery.py: ``SqliteHuey`` with a slow task that leaves marks.

``huey_consumer _recovery_stock.huey`` (with ``bench/`` on ``PYTHONPATH``) uses the file
``BENCH_RECOVERY_DB``; the task writes ``<token>.started.<pid>`` when it starts and
``<token>.done`` when it ends into the directory ``BENCH_RECOVERY_MARKS``, so the benchmark
can tell which runs were killed and whether they ever ran again.
"""

import os
import time
from pathlib import Path

from huey import SqliteHuey

huey = SqliteHuey("stock", filename=os.environ["BENCH_RECOVERY_DB"])
MARKS = Path(os.environ["BENCH_RECOVERY_MARKS"])


@huey.task()
def slow(token: str, seconds: float) -> None:
    (MARKS / f"{token}.started.{os.getpid()}").touch()
    time.sleep(seconds)
    (MARKS / f"{token}.done").touch()
