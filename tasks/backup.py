"""Backup jobs: on demand, on the schedule, and caught up at consumer start-up.

The work is :mod:`qrq.backup.jobs`; these tasks hand it the job's progress,
time limit and a way to queue the report mail.
"""

from qrq.backup import jobs as backup_jobs
from qrq.queue import huey, job_task, maintenance, periodic_job, progress, submit
from tasks.mail import send_mail_task

settings = huey.settings


def _mail(to: list[str], subject: str, body: str) -> None:
    submit(send_mail_task, to, subject, body, owner_id=None,
           params={"to": to, "subject": subject})


def backup_now(task, kind: str, due_at: float | None = None) -> dict:
    return backup_jobs.backup_now(huey.settings, huey.storage, task.id, kind, due_at,
                                  mail=_mail, stop=lambda: task.is_timed_out,
                                  report=lambda pct, stage: progress(task, pct, stage))


@job_task("maintenance", name="backup.run", timeout=settings.backup_timeout, retries=1,
          retry_delay=60)
def run_backup_task(kind: str = "manual", due_at: float | None = None, task=None) -> dict:
    """Back up every database now (``qrq backup run``), or catch up a missed run."""
    return backup_now(task, kind, due_at)


@periodic_job("maintenance", name="backup.scheduled", timeout=settings.backup_timeout,
              schedule=lambda ts: maintenance.due_now(
                  huey.settings.backup_schedule,
                  maintenance.zone(huey.settings.backup_timezone), ts))
def scheduled_backup(task=None) -> dict:
    """The backup at QRQ_BACKUP_SCHEDULE."""
    return backup_now(task, "scheduled", backup_jobs.last_due(huey.settings))


def catch_up(now: float | None = None) -> str | None:
    """Enqueue one catch-up backup if a scheduled one was missed; return its job id."""
    due = backup_jobs.claim_catch_up(huey.settings, huey.storage, now)
    if due is None:
        return None
    return submit(run_backup_task, "catch-up", due, owner_id=None,
                  params={"kind": "catch-up", "due_at": due})


@huey.on_startup("backup.catch_up")
def _catch_up_on_start() -> None:
    catch_up()  # huey logs an error and goes on
