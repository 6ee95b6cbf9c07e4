"""A run's end on PostgreSQL in one statement.

The generic completion (:meth:`qrq.queue.storage.LeasedStorage._end_run`) deletes the
run's leased task row, then records the job's end (:func:`qrq.queue.jobs.finish`): two
statements, two round trips. When the job's update is all that ``finish`` writes (a
first run that finished: most jobs), both are one statement here, and the update applies
only if the delete took the row this run leased (the lease is the fence, as there). A
batch's ends of that kind go to the server together, one round trip for all.
"""

from __future__ import annotations

from qrq.queue import jobs
from qrq.queue.storage import LeasedStorage

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
        if not _one_trip(row, job_id, outcome, first):
            return super()._end_run(curs, row, job_id, outcome, first)
        values = jobs.finish_values(job_id, outcome)
        curs.execute(_END_RUN_SQL, {**values, "row": row, "owner": self.owner})
        return self._ended(curs, values, curs.fetchone())

    def _end_runs(self, curs, runs: list[tuple]) -> list[jobs.EndedJob]:
        """A batch's ends: those of one statement each go to the server together, one
        round trip for all (psycopg's pipeline), the rest one by one."""
        quick, rest = [], []
        for run in runs:
            (quick if _one_trip(*run) else rest).append(run)
        if len(quick) < 2:
            return super()._end_runs(curs, runs)
        values = [jobs.finish_values(job_id, outcome) for _, job_id, outcome, _ in quick]
        curs.executemany(_END_RUN_SQL, [{**v, "row": run[0], "owner": self.owner}
                                        for v, run in zip(values, quick, strict=True)],
                         returning=True)
        returned = []
        for _ in values:
            returned.append(curs.fetchone())
            curs.nextset()
        ended = [self._ended(curs, v, r) for v, r in zip(values, returned, strict=True)]
        ended += super()._end_runs(curs, rest)
        return [job for job in ended if job is not None]

    def _ended(self, curs, values: dict, returned: tuple) -> jobs.EndedJob | None:
        """The job that :data:`_END_RUN_SQL` ended, from what it *returned*; when the
        row no longer carried the run's lease, :meth:`_lease_gone` says."""
        held, job_type, has_callback = returned
        if not held:
            return self._lease_gone(curs, values["id"], values["status"])
        return jobs.ended_job(values, None if job_type is None else (job_type, has_callback))


def _one_trip(row, job_id, outcome, first) -> bool:
    """Whether a run's end is :data:`_END_RUN_SQL` alone: a first run that finished."""
    return row is not None and job_id is not None and outcome is not None \
        and jobs.closes_no_attempt(outcome, first)


