"""The Huey instance: leased SQLite storage, signed payloads, and job records.

``QrqHuey`` keeps huey's API and adds what a job system needs: every enqueue
writes a job record in the same transaction; each run's outcome (finished,
failed, retrying, canceled, expired) is written in the transaction that
releases its lease; a retry waits with exponential backoff plus jitter; an
interrupted run gives its lease back. This module imports no tasks, so task
modules can import it without cycles (``huey_app.py`` imports both).
"""

from __future__ import annotations

import datetime
import functools
import importlib
import logging
import os
import random
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from huey import Huey
from huey import signals as S
from huey.exceptions import TaskTimeout
from huey.serializer import SignedSerializer

from qrq.config import Settings, settings_or_exit
from qrq.errors import Conflict, NotFound, QrqError
from qrq.queue import jobs
from qrq.queue.storage import LeasedSqliteStorage

logger = logging.getLogger("qrq.queue")

# Higher runs first: interactive work ahead of bulk and housekeeping.
PRIORITY = {"pdf": 10, "mail": 5, "batch": 0, "analytics": 0, "maintenance": -10}
_RELEASE = "release"


class QrqHuey(Huey):
    storage_class = LeasedSqliteStorage

    def __init__(self, settings: Settings, name: str = "qrq"):
        self._state = threading.local()
        self.settings = settings
        super().__init__(name, results=False, utc=True, **self._storage_kwargs(settings))
        self.storage.synchronous = settings.enqueue_sync
        self.serializer = SignedSerializer(secret=settings.secret_key, salt="qrq")
        self._end_hooks: list[Callable[[str], Any]] = []
        self.post_execute(name="qrq_record_outcome")(self._record_outcome)
        self._signal.connect(self._on_expired, S.SIGNAL_EXPIRED)
        self._signal.connect(self._on_revoked, S.SIGNAL_REVOKED)
        self._signal.connect(self._on_interrupted, S.SIGNAL_INTERRUPTED)

    @staticmethod
    def _storage_kwargs(settings: Settings) -> dict[str, Any]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return {"filename": str(settings.queue_db), "lease_seconds": settings.lease_seconds,
                "timeout": settings.busy_timeout, "caps": settings.caps,
                "long_cap": settings.long_job_cap}

    def configure(self, settings: Settings) -> None:
        """Point this instance at another data directory (tests, ``create_app``)."""
        self.storage.close()
        self.settings = settings
        self.storage_kwargs = self._storage_kwargs(settings)
        self.storage = self.create_storage()
        self.storage.synchronous = settings.enqueue_sync
        self.serializer = SignedSerializer(secret=settings.secret_key, salt="qrq")

    def create_consumer(self, **options):
        from qrq.queue.consumer import QrqConsumer

        return QrqConsumer(self, **options)

    # -- enqueue ------------------------------------------------------------------------

    def enqueue(self, task, job: dict[str, Any] | None = None):
        """Enqueue *task* with its job record, in one transaction.

        Tasks given an eta in the future go straight to the schedule. Groups,
        chords and immediate mode are left to huey.
        """
        if self._immediate or not hasattr(task, "job_type"):
            return super().enqueue(task)
        if task.expires:
            task.resolve_expires(self.utc)
        self._emit(S.SIGNAL_ENQUEUED, task)
        if job is None:
            job = jobs.new_record(task.id, task.job_type, task.name, None)
        eta = task.eta if task.eta and task.eta > self._get_timestamp() else None
        self.storage.enqueue(self.serialize_task(task), task.priority, job_id=task.id,
                             job=job, job_type=task.job_type, eta=eta)

    # -- run ------------------------------------------------------------------------------

    def dequeue(self):
        data = self.storage.dequeue()
        if data is None:
            return None
        try:
            return self.deserialize_task(data)
        except Exception as exc:
            # A row not signed with our secret is never unpickled.
            job_id = self.storage.leased_job_id
            logger.error("refused queue row for job %s: %s", job_id, exc)
            self.storage.complete(job_id, {"status": "failed",
                                           "error": "refused: payload signature mismatch"})
            return None

    def execute(self, task, timestamp=None):
        state = self._state
        state.outcome, state.requeued = None, False
        try:
            return super().execute(task, timestamp)
        finally:
            if state.requeued:
                pass
            elif state.outcome == _RELEASE:
                self.storage.release(task.id)
            else:
                # No outcome means huey's own machinery failed around the task:
                # end the job visibly rather than leave it "running".
                self.storage.complete(task.id, state.outcome or {
                    "status": "failed", "error": "internal error: the run left no outcome"})
                self.job_ended(task.id)

    def _record_outcome(self, task, value, exc) -> None:
        if exc is None:
            if value is not None and not isinstance(value, dict):
                value = {"value": value}
            self._state.outcome = {"status": "finished", "result": value}
        elif task.retries:
            self._state.error = describe_error(exc)  # the requeue records it
        else:
            self._state.outcome = {**describe_error(exc),
                                   "status": "canceled" if isinstance(exc, jobs.JobCanceled)
                                   else "failed"}

    def _on_expired(self, task, *args) -> None:
        self._state.outcome = {"status": "expired", "error": "expired: not started in time"}

    def _on_revoked(self, task, *args) -> None:
        self._state.outcome = {"status": "canceled", "error": "canceled"}

    def _on_interrupted(self, task, *args) -> None:
        self._state.outcome = _RELEASE

    def _requeue_task(self, task, timestamp, retry_eta=None):
        task.retries -= 1
        if retry_eta is None:
            # Up to 50% random extra on the exponential backoff spreads a burst of retries.
            delay = task.retry_delay * (1 + random.random() * 0.5)
            if task.retry_backoff:
                task.retry_delay *= task.retry_backoff
            retry_eta = timestamp + datetime.timedelta(seconds=delay)
        task.eta = retry_eta
        wait = max(0.0, (retry_eta - timestamp).total_seconds())
        error = getattr(self._state, "error", None) or {}
        logger.info("retrying %s in %.1fs, %s retries left", task.id, wait, task.retries)
        self.storage.reschedule(self.serialize_task(task), retry_eta, task.id,
                                {**error, "status": "retrying",
                                 "next_attempt_at": time.time() + wait},
                                getattr(task, "job_type", None), task.priority)
        self._state.requeued = True

    def add_schedule(self, task):
        if self.storage.leased_job_id is None:
            return super().add_schedule(task)
        # A leased task that is not due yet: swap its row for a schedule entry.
        eta = task.eta or datetime.datetime.fromtimestamp(0)
        wait = max(0.0, (eta - self._get_timestamp()).total_seconds())
        self.storage.reschedule(self.serialize_task(task), eta, task.id,
                                {"status": "queued", "next_attempt_at": time.time() + wait},
                                getattr(task, "job_type", None), task.priority)
        self._state.requeued = True

    # -- control ------------------------------------------------------------------------

    def retry(self, job_id: str) -> None:
        """Run a failed, canceled or expired job again, under the same id.

        :raises NotFound: no such job. :raises Conflict: the job has not ended
            badly, or it predates stored payloads.
        """
        job = jobs.get(self.storage, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job["status"] not in ("failed", "canceled", "expired"):
            raise Conflict(f"job {job_id} is {job['status']}; only failed, canceled or "
                           "expired jobs can be retried")
        payload = self.storage.sql("select payload from job where id = ?", (job_id,),
                                   results=True)[0][0]
        if payload is None:
            raise Conflict(f"job {job_id} has no stored payload to re-run")
        task = self.deserialize_task(payload)
        # A fresh start: full retries, a new expiry window, no pending eta.
        defaults = type(task)
        task.retries, task.retry_delay = defaults.default_retries, defaults.default_retry_delay
        task.eta, task.expires_resolved = None, None
        if task.expires:
            task.resolve_expires(self.utc)
        if not self.storage.enqueue_retry(self.serialize_task(task), task.priority, job_id,
                                          getattr(task, "job_type", None)):
            raise Conflict(f"job {job_id} changed state; try again")

    def cancel(self, job_id: str) -> str:
        """Cancel a job: at once while it waits, at its next progress call while it runs.

        Returns the job's status afterwards.
        """
        if self.storage.cancel_queued(job_id):
            self.job_ended(job_id)
        else:
            jobs.flag_cancel(self.storage, job_id)
        return jobs.get(self.storage, job_id)["status"]

    # -- job end hooks (webhooks) ----------------------------------------------------------

    def on_job_end(self, hook: Callable[[str], Any]) -> Callable[[str], Any]:
        """Call ``hook(job_id)`` after a job's end is recorded (finished, failed,
        canceled, expired), in the process that recorded it."""
        if hook not in self._end_hooks:
            self._end_hooks.append(hook)
        return hook

    def job_ended(self, job_id: str) -> None:
        """Run the end hooks; a failing hook is logged and never touches the job."""
        for hook in self._end_hooks:
            try:
                hook(job_id)
            except Exception:
                logger.exception("job end hook %s failed for job %s",
                                 getattr(hook, "__name__", hook), job_id)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The owner's message and the admin's traceback for a failed attempt."""
    if isinstance(exc, TaskTimeout):
        message = "timeout"
    elif isinstance(exc, (QrqError, jobs.JobCanceled)):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": message, "traceback": trace}


huey = QrqHuey(settings_or_exit())


def job_task(job_type: str, *, name: str, timeout: float | None = None, retries: int = 0,
             retry_delay: float | None = None, expires: float | None = None,
             retry_timeouts: bool = False) -> Callable:
    """Declare a qrq task: a huey task with a job type, a stable name and explicit limits.

    The function receives ``task`` (for :func:`progress`). Bad input (a
    :class:`QrqError`), a cancel, and (unless *retry_timeouts*) a timeout fail
    the job at once; any other error is retried *retries* times.
    """
    permanent = (QrqError, jobs.JobCanceled) + (() if retry_timeouts else (TaskTimeout,))

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, task=None, **kwargs):
            try:
                return fn(*args, task=task, **kwargs)
            except sqlite3.OperationalError as exc:
                if task.is_timed_out and "interrupt" in str(exc):
                    exc = TaskTimeout(f"timeout ({task.timeout}s)")
                    if not retry_timeouts:
                        task.retries = 0
                    raise exc from None
                raise
            except permanent:
                task.retries = 0  # permanent: huey sees no retries left
                raise

        # huey registers a task as "<module>.<name>"; pinning the module keeps the
        # registered name "qrq.<name>" however the task modules are moved.
        run.__module__ = "qrq"

        return huey.task(
            name=name, context=True, retries=retries,
            retry_delay=huey.settings.retry_delay if retry_delay is None else retry_delay,
            retry_backoff=2, timeout=timeout, expires=expires,
            priority=PRIORITY.get(job_type, 0), job_type=job_type)(run)
    return decorator


def periodic_job(job_type: str, *, name: str, schedule: Callable,
                 timeout: float | None = None) -> Callable:
    """Declare a periodic qrq task (``schedule`` is a huey ``crontab``); each run
    gets a job record owned by no one, so operators see it like any other job."""
    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(task=None):
            return fn(task=task)

        run.__module__ = "qrq"
        return huey.periodic_task(schedule, name=name, context=True, timeout=timeout,
                                  priority=PRIORITY.get(job_type, 0), job_type=job_type)(run)
    return decorator


def submit(task_wrapper, *args, owner_id: int | None, params: dict[str, Any] | None = None,
           **kwargs) -> str:
    """Enqueue a call of *task_wrapper* with its job record; return the job id.

    ``timeout``, ``expires`` and ``priority`` in *kwargs* override the task's defaults.
    """
    task = task_wrapper.s(*args, **kwargs)
    huey.enqueue(task, job=jobs.new_record(task.id, task.job_type, task.name, owner_id,
                                           params))
    return task.id


def load_task_modules(settings: Settings) -> None:
    """Import the extra task modules named in ``QRQ_TASK_MODULES``.

    As with ``huey_consumer``, modules in the current directory are found: the
    ``qrq`` console script does not put it on the path by itself.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in filter(None, (part.strip() for part in settings.task_modules.split(","))):
        importlib.import_module(name)


def progress(task, percent: float, stage: str = "") -> None:
    """Report a running job's progress (0-100) and stage; stops it if it was canceled."""
    task.check_timeout()
    jobs.report_progress(huey.storage, task.id, percent, stage)
