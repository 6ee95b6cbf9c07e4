"""qrq's own tasks, declared once: name, job type, priority, limits and schedules.

The task modules (``tasks/``) register the functions under these names; the web
app and the CLI submit by name and list the periodic tasks from here, so they
never import the task modules. A limit given as a string is the name of a
setting, read when the queue is initialised (:meth:`QrqHuey.init`), not when a
module is imported.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from huey import crontab

from qrq.config import Settings
from qrq.errors import ValidationError
from qrq.schedule import due_now, zone

# Higher runs first: interactive work ahead of bulk and housekeeping.
PRIORITY = {"pdf": 10, "mail": 5, "batch": 0, "analytics": 0, "maintenance": -10}

Limit = float | str | None


@dataclass(frozen=True)
class TaskSpec:
    """One task's declaration. ``job_type`` None: a plain huey task, with no job record."""

    job_type: str | None
    timeout: Limit = None
    retries: int | str = 0
    retry_delay: Limit = "retry_delay"
    expires: Limit = None
    priority: int | None = None
    retry_timeouts: bool = False
    # Periodic tasks: whether a run is due at a naive-UTC minute, under these settings.
    schedule: Callable[[Settings, datetime.datetime], bool] | None = None

    @property
    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return PRIORITY.get(self.job_type, 0)

    def limits(self, settings: Settings) -> dict[str, float | int | None]:
        """The limits with setting names replaced by their values."""
        return {name: getattr(settings, value) if isinstance(value, str) else value
                for name, value in ((f.name, getattr(self, f.name)) for f in fields(self)
                                    if f.name in ("timeout", "retries", "retry_delay",
                                                  "expires"))}


def _cron(expr: str) -> Callable[[Settings, datetime.datetime], bool]:
    test = crontab(*expr.split())
    return lambda settings, moment: test(moment)


def _backup_due(settings: Settings, moment: datetime.datetime) -> bool:
    return due_now(settings.backup_schedule, zone(settings.backup_timezone), moment)


def _maintenance_due(settings: Settings, moment: datetime.datetime) -> bool:
    return due_now(settings.maintenance_schedule, zone(settings.backup_timezone), moment)


TASKS: dict[str, TaskSpec] = {
    "pdf.generate": TaskSpec("pdf", timeout="pdf_timeout", retries="pdf_retries",
                             expires="job_expiry"),
    "batch.generate": TaskSpec("batch", timeout="batch_timeout", retries=3,
                               expires="job_expiry"),
    "mail.send": TaskSpec("mail", timeout=120, retries=5, retry_delay=30),
    "analytics.time_based": TaskSpec("analytics", timeout="analytics_timeout", retries=2,
                                     expires="job_expiry"),
    "backup.run": TaskSpec("maintenance", timeout="backup_timeout", retries=1,
                           retry_delay=60),
    "maintenance.run": TaskSpec("maintenance", timeout=3600),
    # A job's end posted to its callback URL (qrq/webhooks.py); at the default 2 s first
    # delay, doubling, six retries span about two minutes.
    "webhook.deliver": TaskSpec("webhook", timeout=60, retries=6),
}

# Each run of a periodic task with a job type gets a job record owned by no one.
PERIODIC: dict[str, TaskSpec] = {
    # Every minute, ahead of everything, dropped if it could not start within 50 s:
    # a job record per check would bury the job list (see tasks/alerts.py).
    "alerts.check": TaskSpec(None, timeout=60, expires=50, priority=100, retry_delay=0,
                             schedule=_cron("* * * * *")),
    "analytics.warm_up": TaskSpec("analytics", timeout=120, retry_delay=0,
                                  schedule=_cron("*/5 * * * *")),
    "backup.scheduled": TaskSpec("maintenance", timeout="backup_timeout", retry_delay=0,
                                 schedule=_backup_due),
    "maintenance.weekly": TaskSpec("maintenance", timeout=3600, retry_delay=0,
                                   schedule=_maintenance_due),
    "retention.purge": TaskSpec("maintenance", timeout=600, retry_delay=0,
                                schedule=_cron("7 * * * *")),
}


@dataclass(frozen=True)
class PeriodicTask:
    """A periodic task as the dashboard lists it (huey's ``PeriodicTask`` shape)."""

    name: str
    job_type: str | None
    priority: int
    settings: Settings
    spec: TaskSpec

    def validate_datetime(self, moment: datetime.datetime) -> bool:
        return self.spec.schedule(self.settings, moment)


def periodic_tasks(settings: Settings) -> list[PeriodicTask]:
    """qrq's periodic tasks, each able to say when it runs under *settings*."""
    return [PeriodicTask(name, spec.job_type, spec.effective_priority, settings, spec)
            for name, spec in PERIODIC.items()]


def task_spec(name: str) -> TaskSpec:
    """The declaration of submittable task *name*.

    :raises ValueError: no such task.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def job_types() -> list[str]:
    """The job types of qrq's own tasks, sorted (what ``qrq worker --types`` accepts)."""
    return sorted({spec.job_type for spec in (*TASKS.values(), *PERIODIC.values())
                   if spec.job_type})


def unknown_job_types(names: Iterable[str], where: str = "",
                      declared: Iterable[str] = ()) -> str | None:
    """What is wrong with *names* as job types, found *where* (e.g. " in --types"),
    or None when each names one of :func:`job_types` or *declared* (the types of the
    tasks a consumer's task modules declared)."""
    known = sorted({*job_types(), *declared})
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return None
    return (f"unknown job type {', '.join(map(repr, unknown))}{where}; known: "
            f"{', '.join(known)} (backups run as maintenance)")


def check_job_type(value: Any) -> str:
    """*value* when it names a job type (:func:`job_types`).

    :raises ValidationError: another value (field ``type``).
    """
    known = job_types()
    if value not in known:
        raise ValidationError(f"must be one of {', '.join(known)}", field="type")
    return value
