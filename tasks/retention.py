"""Housekeeping that keeps the data directory bounded."""

from qrq.queue import huey, periodic_job
from qrq.queue.retention import apply_retention


@periodic_job(name="retention.purge")  # type, limits, schedule: qrq/queue/catalog.py
def purge_old_jobs(task=None) -> dict:
    """Hourly: delete job records, artifacts and keys past their retention."""
    return apply_retention(huey.storage, huey.settings)
