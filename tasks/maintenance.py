"""The weekly maintenance job: logs, WAL checkpoint, VACUUM when idle.

Like backups it takes a lock (``maintenance``) and a missed run is caught up once
at the next consumer start. Job records are purged by tasks/retention.py.
"""

import time

from qrq.queue import huey, job_task, locks, maintenance, periodic_job, progress
from qrq.queue.housekeeping import submit_maintenance

LOCK = "maintenance"


def _due(now: float | None = None) -> float | None:
    s = huey.settings
    return maintenance.last_due(s.maintenance_schedule, maintenance.zone(s.backup_timezone),
                                time.time() if now is None else now)


def maintain_now(task, kind: str, due_at: float | None = None) -> dict:
    s = huey.settings

    def body() -> tuple[dict, str]:
        result = maintenance.run_maintenance(
            huey.storage, s, task.id, report=lambda pct, stage: progress(task, pct, stage),
            stop=lambda: task.is_timed_out)
        return {"kind": kind, **result}, "ok"

    return locks.run_exclusive(huey.storage, LOCK, task.id, kind, due_at, body)


@job_task(name="maintenance.run")  # type, limits, schedules: qrq/queue/catalog.py
def run_maintenance_task(kind: str = "manual", due_at: float | None = None,
                         task=None) -> dict:
    """Run the maintenance now (``qrq maintenance run``), or catch up a missed run."""
    return maintain_now(task, kind, due_at)


@periodic_job(name="maintenance.weekly")
def weekly_maintenance(task=None) -> dict:
    """The maintenance at QRQ_MAINTENANCE_SCHEDULE."""
    return maintain_now(task, "scheduled", _due())


def catch_up(now: float | None = None) -> str | None:
    """Enqueue one catch-up maintenance if a scheduled one was missed; return its job id."""
    due = _due(now)
    if not locks.claim_catch_up(huey.storage, LOCK, due, now=now):
        return None
    return submit_maintenance("catch-up", due)


@huey.on_startup("maintenance.catch_up")
def _catch_up_on_start() -> None:
    catch_up()  # huey logs an error and goes on
