"""huey's revoke API on qrq's jobs: revoking a job cancels it.

huey revokes a task by writing a key in its ``kv`` table and reads that key (and
its class's) before every run, then deletes it after: two reads per job on a
queue where nothing is ever revoked, a fifth of a no-op job's cost. A qrq job is
canceled through its record instead (:meth:`QrqHuey.cancel`): a waiting job's row
is deleted with it, so a job that is being run was leased, and was not canceled
when it was. So for a job (a task with a job type, or the id of a job record):
``revoke`` cancels it, ``is_revoked`` says whether it was canceled, ``restore``
has nothing to undo, and the run reads no revoke keys. Tasks without a job
record (plain huey use) keep huey's keys.
"""

from __future__ import annotations

import threading

from huey import Huey
from huey.api import Result, Task

from qrq.queue import jobs


class RevokeByCancel(Huey):
    """Mixed into :class:`qrq.queue.qrq_huey.QrqHuey`, which gives ``cancel``."""

    def __init__(self, *args, **kwargs):
        self._running = threading.local()  # the job task this thread is running
        super().__init__(*args, **kwargs)

    def _job_id(self, task) -> str | None:
        """The job id *task* (a task, a result, or an id) names, if it is a qrq job."""
        if isinstance(task, Result):
            task = task.task
        if isinstance(task, Task):
            return task.id if getattr(task, "job_type", None) is not None else None
        if isinstance(task, str) and jobs.get(self.storage, task) is not None:
            return task
        return None

    def execute(self, task, timestamp=None):
        job = getattr(task, "job_type", None) is not None
        self._running.task = task if job else None
        try:
            return super().execute(task, timestamp)
        finally:
            self._running.task = None

    def is_revoked(self, task, timestamp=None, peek=True):
        if task is not None and task is getattr(self._running, "task", None):
            return False  # leased just now, so not canceled (a cancel deletes the row)
        job_id = self._job_id(task)
        if job_id is None:
            return super().is_revoked(task, timestamp, peek)
        job = jobs.get(self.storage, job_id)
        return job is not None and job["status"] == "canceled"

    def delete(self, key):
        running = getattr(self._running, "task", None)
        if running is not None and key == running.revoke_id:
            return False  # huey's clean-up after a run: a job never has a revoke key
        return super().delete(key)

    def revoke(self, task, revoke_until=None, revoke_once=False):
        job_id = self._job_id(task)
        if job_id is None:
            return super().revoke(task, revoke_until, revoke_once)
        self.cancel(job_id)

    def revoke_by_id(self, id, revoke_until=None, revoke_once=False):
        if self._job_id(id) is None:
            return super().revoke_by_id(id, revoke_until, revoke_once)
        self.cancel(id)

    def restore(self, task):
        if self._job_id(task) is None:
            return super().restore(task)
        return False  # a canceled job runs again with retry(), under its id

    def restore_by_id(self, id):
        return False if self._job_id(id) is not None else super().restore_by_id(id)

    def revoke_all(self, task_class, revoke_until=None, revoke_once=False):
        _refuse_job_class(task_class)
        return super().revoke_all(task_class, revoke_until, revoke_once)

    def restore_all(self, task_class):
        _refuse_job_class(task_class)
        return super().restore_all(task_class)


def _refuse_job_class(task_class) -> None:
    task_class = getattr(task_class, "task_class", task_class)  # a TaskWrapper's class
    if getattr(task_class, "job_type", None) is not None:
        raise NotImplementedError(
            "qrq job types are not revoked as a class: pause the type (qrq jobs pause TYPE) "
            "or cancel its jobs")
