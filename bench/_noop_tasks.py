"""A no-op qrq job for bench/drain.py, loaded with ``QRQ_TASK_MODULES=_noop_tasks``.

Its type ``bench`` is not in ``QRQ_TYPE_CAPS``: a capped type (``maintenance`` is capped
at 1 by default) would let only one of the consumer's workers run it at a time, and the
benchmark would measure the cap instead of the queue.
"""

from qrq.queue import job_task


@job_task("bench", name="bench.noop")
def noop(task=None) -> None:
    """Do nothing; the job record still gets its outcome (finished, no result)."""
