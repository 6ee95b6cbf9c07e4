"""Job end hooks: code that runs once after a job's end is recorded (a webhook's
delivery is queued this way, :mod:`qrq.webhooks`).

A job ends in one statement (:func:`qrq.queue.jobs.finish`, in the transaction that
releases its lease or removes its queued row), and that statement also reads what the
hooks decide on (:class:`qrq.queue.jobs.EndedJob`: the job's type, whether a callback
waits for its end). So a hook never reads the job again, and a job that concerns no
hook (most jobs, on the consumer's hot path) costs no query at its end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from huey import Huey

from qrq.queue import jobs

logger = logging.getLogger("qrq.queue")

EndHook = Callable[[jobs.EndedJob], Any]


class EndHooks(Huey):
    """Mixed into :class:`qrq.queue.qrq_huey.QrqHuey`, whose completions call
    :meth:`job_ended` with what they recorded."""

    def __init__(self, *args, **kwargs):
        self._end_hooks: list[EndHook] = []
        super().__init__(*args, **kwargs)

    def on_job_end(self, hook: EndHook) -> EndHook:
        """Call ``hook(ended)`` once after each job's end is recorded (finished, failed,
        canceled, expired), in the process that recorded it; *ended* is a
        :class:`~qrq.queue.jobs.EndedJob`."""
        if hook not in self._end_hooks:
            self._end_hooks.append(hook)
        return hook

    def job_ended(self, ended: jobs.EndedJob | None) -> None:
        """Run the end hooks for *ended* (None: nothing ended, e.g. the run's lease was
        lost); a failing hook is logged and never touches the job."""
        if ended is None:
            return
        for hook in self._end_hooks:
            try:
                hook(ended)
            except Exception:
                logger.exception("job end hook %s failed for job %s",
                                 getattr(hook, "__name__", hook), ended.id)

    def jobs_ended(self, ended: list[jobs.EndedJob]) -> None:
        """:meth:`job_ended` for each job a write ended (a batch's commit ends several)."""
        for job in ended:
            self.job_ended(job)
