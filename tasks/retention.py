"""Housekeeping that keeps the data directory bounded."""

from huey import crontab

from qrq.queue import huey, periodic_job
from qrq.queue.retention import apply_retention


@periodic_job("maintenance", name="retention.purge", schedule=crontab(minute="7"),
              timeout=600)
def purge_old_jobs(task=None) -> dict:
    """Hourly: delete job records, artifacts and keys past their retention."""
    return apply_retention(huey.storage, huey.settings)
