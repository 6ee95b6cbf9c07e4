"""Backup jobs: on demand, on the schedule, and caught up at consumer start-up.

The work is :mod:`qrq.backup.jobs`; these tasks hand it the job's progress,
time limit and a way to queue the report mail.
"""

from qrq.backup import jobs as backup_jobs
from qrq.backup.submit import submit_backup
from qrq.queue import huey, job_task, periodic_job, progress, submit, will_retry


def _mail(to: list[str], subject: str, body: str) -> None:
    submit("mail.send", to, subject, body, owner_id=None,
           params={"to": to, "subject": subject})


def backup_now(task, kind: str, due_at: float | None = None) -> dict:
    return backup_jobs.backup_now(huey.settings, huey.storage, task.id, kind, due_at,
                                  mail=_mail, stop=lambda: task.is_timed_out,
                                  report=lambda pct, stage: progress(task, pct, stage),
                                  retried=lambda exc: will_retry(task, exc))


@job_task(name="backup.run")  # type, limits, schedules: qrq/queue/catalog.py
def run_backup_task(kind: str = "manual", due_at: float | None = None, task=None) -> dict:
    """Back up every database now (``qrq backup run``), or catch up a missed run."""
    return backup_now(task, kind, due_at)


@periodic_job(name="backup.scheduled")
def scheduled_backup(task=None) -> dict:
    """The backup at QRQ_BACKUP_SCHEDULE. Run now by hand (``qrq schedule run``, the
    dashboard's Schedule page: its record names who asked), it is a backup now, as
    ``qrq backup run``'s: not skipped because this due time's backup already ran."""
    return backup_now(task, *backup_jobs.scheduled_run(huey.settings, huey.storage, task.id))


def catch_up(now: float | None = None) -> str | None:
    """Enqueue one catch-up backup if a scheduled one was missed; return its job id."""
    due = backup_jobs.claim_catch_up(huey.settings, huey.storage, now)
    if due is None:
        return None
    return submit_backup("catch-up", due)


@huey.on_startup("backup.catch_up")
def _catch_up_on_start() -> None:
    catch_up()  # huey logs an error and goes on
