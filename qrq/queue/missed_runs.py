"""The consumer's scheduler: huey's, plus periodic runs that could not be queued
during a database outage, queued once the database answers again.

huey's scheduler queues each due periodic task in the minute it is due. When that
fails (the database server down or restarting, a full disk) it logs "Error
enqueueing periodic task", which the consumer's outage filter
(:class:`~qrq.queue.consumer.StorageFullLog`) lets through once a minute for the
whole outage, so most missed runs are never named; and the run is lost: huey does
not catch up periodic tasks. A nightly backup or a weekly maintenance lost to a
minute's server restart waits a day or a week for its next chance.

So, as anacron or systemd's ``Persistent=`` timers do, the latest missed run of
each periodic task with a job record is queued once, at the scheduler's next
minute on which the database answers, and a warning names it and its due time. It
keeps its slot's job id (:meth:`QrqHuey.read_periodic`), so when another consumer's
scheduler did queue it, queueing it again is a no-op. An outage that spans several
runs of a task (the hourly retention) queues only the latest: one late run does what
they would have. The backup and the maintenance skip a run whose due time a
successful run already covered. Tasks without a job record
(the minute's alert check) are not caught up: their next minute does the same.
A missed run is remembered in the scheduler's memory only, and a consumer that restarts
forgets it. Not kept in the queue database on purpose: a run is missed because that
database could not be written, so it could not be recorded there then either. What
matters survives a restart without it: a consumer cannot start until the queue database
answers (:meth:`QrqHuey.init_or_exit`), and each worker's start-up catch-up
(``tasks/backup.py``, ``tasks/maintenance.py``) derives a missed backup or maintenance
from the schedule and the last successful run recorded in ``maintenance_state``
(:func:`qrq.queue.locks.claim_catch_up`). The other periodic tasks run again within the
hour. Were that start-up claim refused too (a database that opens but cannot be
written: a full disk), it is logged (``startup hook "backup.catch_up" failed``), the
next worker start claims it, and the ``backup_age`` alert says when no backup succeeded.
"""

from __future__ import annotations

import datetime
import logging

from huey.consumer import Scheduler

logger = logging.getLogger("qrq.queue.scheduler")


class CatchUpScheduler(Scheduler):
    """huey's scheduler, queueing each periodic task's latest missed run once the
    database is back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.missed: dict[str, tuple[object, datetime.datetime]] = {}  # name: (task, due)

    def enqueue_periodic_tasks(self, now):
        self._queue_missed()
        # One timestamp for huey's check and the slot's job id (huey's own reads the
        # clock itself), so the due time logged is the slot's.
        moment = (now or self.huey.now()).replace(second=0, microsecond=0)
        for task in self.huey.read_periodic(moment):
            self._logger.info("Enqueueing periodic task %s.", task)
            try:
                self.huey.enqueue(task)
            except Exception:
                self._logger.exception("Error enqueueing periodic task %s.", task)
                if getattr(task, "job_type", None) is not None:
                    self.missed[task.name] = (task, moment)  # replaces an older miss

    def _queue_missed(self) -> None:
        """Queue each remembered missed run; stop at the first failure (the database
        is still away: the next minute tries again)."""
        for name, (task, due) in list(self.missed.items()):
            try:
                self.huey.enqueue(task)
            except Exception:
                self._logger.exception("Error enqueueing periodic task %s.", task)
                return
            del self.missed[name]
            logger.warning("periodic task %s due at %s could not be queued then (the "
                           "queue database failed); queued now", name, self._when(due))

    def _when(self, moment: datetime.datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if self.huey.utc else "")
