"""Put on PYTHONPATH only for a process run under libfaketime (tests/test_multihost.py).

With ``DONT_FAKE_MONOTONIC=1`` (needed: with a faked monotonic clock every timed
wait on a lock hangs) libfaketime still shifts the absolute ``CLOCK_MONOTONIC``
deadline of ``clock_nanosleep`` by its offset, so ``time.sleep`` fails with EINVAL.
``select`` takes a relative timeout, which libfaketime leaves alone.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
