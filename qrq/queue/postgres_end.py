"""A run's end on PostgreSQL in one statement.

The generic completion (:meth:`qrq.queue.storage.LeasedStorage._end_run`) deletes the
run's leased task row, then records the job's end (:func:`qrq.queue.jobs.finish`): two
statements, two round trips. When the job's update is all that ``finish`` writes (a
first run that finished: most jobs), both are one statement here, and the update applies
only if the delete took the row this run leased (the lease is the fence, as there).
"""

from __future__ import annotations

import logging

from qrq.queue import jobs
from qrq.queue.storage import LEASE_LOST, LeasedStorage

logger = logging.getLogger("qrq.queue.storage")

# Every part sees the rows as they were; the job's update reads the delete's result.
_END_RUN_SQL = (
    "with lease as (delete from task where id = :row and lease_owner = :owner "
    "returning job_id), ended as ("
    + jobs.finish_sql(fence="exists (select 1 from lease)")
    + ") select (select count(*) from lease), (select type from ended), "
    "(select has_callback from ended)")


class OneTripEnd(LeasedStorage):
    """The leased storage with this end of a run: the base of
    :class:`qrq.queue.postgres.LeasedPostgresStorage`."""

    def _end_run(self, curs, row, job_id, outcome, first) -> jobs.EndedJob | None:
        if row is None or job_id is None or outcome is None \
                or not jobs.closes_no_attempt(outcome, first):
            return super()._end_run(curs, row, job_id, outcome, first)
        values = jobs.finish_values(job_id, outcome)
        curs.execute(_END_RUN_SQL, {**values, "row": row, "owner": self.owner})
        held, job_type, has_callback = curs.fetchone()
        if not held:
            logger.warning(LEASE_LOST, job_id)
            return None
        return jobs.ended_job(values, None if job_type is None else (job_type, has_callback))
