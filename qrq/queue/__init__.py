"""The Huey instance, and how tasks are declared, submitted and report progress.

``huey`` (a :class:`QrqHuey`) is built empty, as peewee's ``Database(None)``: importing this module
(or a task module) touches no file. The web app (``create_app``), the consumer
(``huey_app.py``) and the CLI (``get_queue``) call :meth:`QrqHuey.init` with
the settings when they start; using the queue before that raises
:class:`QueueNotInitialised`. This module imports no tasks: the web app and the
CLI submit by task name (:mod:`qrq.queue.catalog`).
"""

from __future__ import annotations

import functools
import importlib
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from huey.exceptions import TaskTimeout

from qrq.config import Settings
from qrq.errors import NotFound, QrqError, TransientError, ValidationError
from qrq.queue import catalog, job_progress, jobs
from qrq.queue.admission import Admission
from qrq.queue.catalog import PRIORITY, TaskSpec
from qrq.queue.jobs import describe_error
from qrq.queue.qrq_huey import MODULE as _MODULE
from qrq.queue.qrq_huey import QrqHuey
from qrq.queue.uninitialised import QueueNotInitialised

__all__ = ["PRIORITY", "Admission", "QrqHuey", "QueueNotInitialised", "describe_error", "huey",
           "job_task", "jobs", "load_application", "load_task_modules", "periodic_job",
           "progress", "run_periodic_now", "submit", "will_retry"]

huey = QrqHuey()


def _declare(spec: TaskSpec, wrapper):
    huey.declare(wrapper.task_class, spec)
    return wrapper


def _spec(name: str, table: dict[str, TaskSpec], given: TaskSpec) -> TaskSpec:
    """qrq's own declaration of *name* when it has one (the arguments must agree)."""
    declared = table.get(name)
    if declared is None:
        return given
    if given.job_type != declared.job_type:
        raise ValueError(f"task {name!r} is declared with job type {declared.job_type!r} "
                         "in qrq.queue.catalog")
    return declared


def job_task(job_type: str | None = None, *, name: str, timeout: float | str | None = None,
             retries: int | str = 0, retry_delay: float | str | None = None,
             expires: float | str | None = None, retry_timeouts: bool = False) -> Callable:
    """Declare a qrq task: a huey task with a job type, a stable name and explicit limits.

    A limit may be a number or the name of a setting (read at ``huey.init``). qrq's
    own tasks are declared in :data:`catalog.TASKS`; for them give only *name*.
    The function receives ``task`` (for :func:`progress`). Bad input (a
    :class:`QrqError` that is not also a ``TransientError``), a cancel, and (unless
    *retry_timeouts*) a timeout fail the job at once; any other error is retried
    *retries* times.
    """
    given = TaskSpec(job_type, timeout=timeout, retries=retries,
                     retry_delay="retry_delay" if retry_delay is None else retry_delay,
                     expires=expires, retry_timeouts=retry_timeouts)
    spec = _spec(name, catalog.TASKS, given if job_type else catalog.task_spec(name))

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, task=None, **kwargs):
            try:
                return fn(*args, task=task, **kwargs)
            except Exception as exc:
                raised = _as_raised(task, exc)
                if _permanent(raised, spec.retry_timeouts):
                    task.retries = 0  # huey sees no retries left
                if raised is not exc:
                    raise raised from None
                raise

        # huey registers a task as "<module>.<name>"; pinning the module keeps the
        # registered name "qrq.<name>" however the task modules are moved.
        run.__module__ = _MODULE
        wrapper = huey.task(name=name, context=True, retry_backoff=2,
                            priority=spec.effective_priority, job_type=spec.job_type)(run)
        wrapper.task_class.retry_timeouts = spec.retry_timeouts  # (:func:`will_retry`)
        return _declare(spec, wrapper)
    return decorator


def _as_raised(task, exc: Exception) -> Exception:
    """*exc* as a job task raises it: SQLite's interrupt at the time limit is a timeout."""
    if isinstance(exc, sqlite3.OperationalError) and task.is_timed_out \
            and "interrupt" in str(exc):
        return TaskTimeout(f"timeout ({task.timeout}s)")
    return exc


def _permanent(exc: Exception, retry_timeouts: bool) -> bool:
    """Whether *exc* fails a job at once: bad input (a :class:`QrqError` that is not also
    a ``TransientError``, such as StoreUnavailable), a cancel, and unless
    *retry_timeouts* a timeout."""
    permanent = (QrqError, jobs.JobCanceled) + (() if retry_timeouts else (TaskTimeout,))
    return isinstance(exc, permanent) and not isinstance(exc, TransientError)


def will_retry(task, exc: Exception) -> bool:
    """Whether *exc*, raised in a run of *task* (a :func:`job_task`'s), is retried: the
    task has retries left and the error is not one that fails the job at once. A task
    asks this before the error leaves it, to report a failure only when it is final."""
    return bool(task.retries) and not _permanent(
        _as_raised(task, exc), getattr(task, "retry_timeouts", False))


def periodic_job(job_type: str | None = None, *, name: str, schedule: Callable | None = None,
                 timeout: float | str | None = None, expires: float | None = None,
                 priority: int | None = None) -> Callable:
    """Declare a periodic qrq task; each run of one with a job type gets a job record
    owned by no one, so operators see it like any other job.

    qrq's own are declared in :data:`catalog.PERIODIC` (give only *name*);
    others give a job type and a huey ``crontab`` as *schedule*.
    """
    if job_type is None and name in catalog.PERIODIC:
        spec = catalog.PERIODIC[name]
    else:
        if schedule is None:
            raise ValueError(f"periodic task {name!r} needs a schedule")
        spec = _spec(name, catalog.PERIODIC, TaskSpec(
            job_type, timeout=timeout, retry_delay=0, expires=expires, priority=priority,
            schedule=lambda settings, moment: schedule(moment)))

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(task=None):
            return fn(task=task)

        run.__module__ = _MODULE
        extra = {"job_type": spec.job_type} if spec.job_type else {}
        return _declare(spec, huey.periodic_task(
            lambda moment: spec.schedule(huey.settings, moment), name=name, context=True,
            priority=spec.effective_priority, **extra)(run))
    return decorator


def submit(task: str | Callable, *args, owner_id: int | None,
           params: dict[str, Any] | None = None, admission: Admission | None = None,
           **kwargs) -> str:
    """Enqueue a call of *task* with its job record; return the job id.

    *task* is a registered name (``"pdf.generate"``, see :data:`catalog.TASKS`),
    which needs no task module imported, or a task function declared with
    :func:`job_task`. ``id``, ``timeout``, ``expires``, ``priority`` (and huey's
    other ``s()`` options) in *kwargs* override the task's defaults. *admission*
    adds the quota and idempotency checks to the enqueue's transaction; when its
    key was seen the earlier job's id is returned and nothing is queued.

    :raises TooManyJobs: the owner is at *admission*'s quota.
    :raises ValidationError: its idempotency key was used with another body.
    """
    if isinstance(task, str):
        return huey.enqueue_by_name(task, args, kwargs, owner_id=owner_id, params=params,
                                    admission=admission)
    call = task.s(*args, **kwargs)
    return huey.enqueue(call, job=jobs.new_record(call.id, call.job_type, call.name, owner_id,
                                                  params), admission=admission)


def run_periodic_now(name: str, *, params: dict[str, Any] | None = None) -> str:
    """Queue a run of periodic task *name* now, as a job owned by no one; return its id.
    Its schedule goes on as before.

    :raises NotFound: no periodic task has that name.
    :raises ValidationError: the task keeps no job record (it runs every minute).
    """
    spec = catalog.PERIODIC.get(name)
    if spec is None:
        raise NotFound(f"no periodic task {name!r}; known: {', '.join(catalog.PERIODIC)}",
                       field="name")
    if spec.job_type is None:
        raise ValidationError(f"{name} keeps no job record (it runs every minute by "
                              "itself); it cannot be run as a job", field="name")
    return huey.enqueue_by_name(name, (), {}, owner_id=None, params=params, spec=spec)


def load_application(name: str) -> None:
    """Import the application module *name* that registers the tasks (``huey_app`` in
    a checkout), found in the current directory as ``huey_consumer`` finds it.

    :raises QrqError: it cannot be imported.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise QrqError(f"cannot import the task application {name!r}: run this from the qrq "
                       "checkout (where huey_app.py is)") from None


def load_task_modules(settings: Settings) -> None:
    """Import the extra task modules named in ``QRQ_TASK_MODULES``.

    As with ``huey_consumer``, modules in the current directory are found: the
    ``qrq`` console script does not put it on the path by itself. A module that is not
    there (or whose package is not) is a mistake in the setting, said in one line; an
    error raised while a module that is there runs (its own import of something missing,
    a syntax error) is the module's, and keeps its traceback, which shows where.

    :raises QrqError: a named module, or its package, cannot be found.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in filter(None, (part.strip() for part in settings.task_modules.split(","))):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            missing = repr(exc.name) + ("" if exc.name == name else f" (of {name!r})")
            raise QrqError(f"QRQ_TASK_MODULES={settings.task_modules!r}: there is no module "
                           f"{missing} in the current directory ({os.getcwd()}) or on the "
                           "Python path (a typo? or set PYTHONPATH)") from None


def progress(task, percent: float, stage: str = "") -> None:
    """Report a running job's progress (0-100) and stage; stops it if it was canceled."""
    task.check_timeout()
    job_progress.report_progress(huey.storage, task.id, percent, stage)
