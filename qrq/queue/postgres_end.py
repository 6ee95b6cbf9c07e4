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
from qrq.queue.leases import RUN_FENCE
from qrq.queue.storage import LeasedStorage

# Every part sees the rows as they were; the job's update reads the delete's result.
# The lease is the run's: its row, this owner, the job on its attempt (LeaseHolder._end_lease).
_END_RUN_SQL = (
    "with lease as (delete from task where id = :row and lease_owner = :owner and "
    + RUN_FENCE.replace("?", ":id", 1).replace("?", ":attempt") + " returning job_id), "
    "ended as ("
    + jobs.finish_sql(fence="exists (select 1 from lease)")
    + ") select (select count(*) from lease), (select type from ended), "
    "(select has_callback from ended)")


class OneTripEnd(LeasedStorage):
    """The leased storage with this end of a run: the base of
    :class:`qrq.queue.postgres.LeasedPostgresStorage`."""

    def _end_run(self, curs, row, job_id, outcome, first, attempt) -> jobs.EndedJob | None:
        if not _one_trip(row, job_id, outcome, first, attempt):
            return super()._end_run(curs, row, job_id, outcome, first, attempt)
        values = jobs.finish_values(job_id, outcome)
        curs.execute(_END_RUN_SQL, {**values, "row": row, "owner": self.owner,
                                    "attempt": attempt})
        return self._ended(curs, values, attempt, curs.fetchone())

    def _end_runs(self, curs, runs: list[tuple]) -> list[jobs.EndedJob]:
        """A batch's ends: those of one statement each go to the server together, one
        round trip for all (psycopg's pipeline), the rest one by one."""
        quick, rest = [], []
        for run in runs:
            (quick if _one_trip(*run) else rest).append(run)
        if len(quick) < 2:
            return super()._end_runs(curs, runs)
        values = [jobs.finish_values(job_id, outcome) for _, job_id, outcome, _, _ in quick]
        curs.executemany(_END_RUN_SQL, [{**v, "row": run[0], "owner": self.owner,
                                         "attempt": run[4]}
                                        for v, run in zip(values, quick, strict=True)],
                         returning=True)
        returned = []
        for _ in values:
            returned.append(curs.fetchone())
            curs.nextset()
        ended = [self._ended(curs, v, run[4], r)
                 for v, run, r in zip(values, quick, returned, strict=True)]
        ended += super()._end_runs(curs, rest)
        return [job for job in ended if job is not None]

    def _ended(self, curs, values: dict, attempt: int,
               returned: tuple) -> jobs.EndedJob | None:
        """The job that :data:`_END_RUN_SQL` ended (the run numbered *attempt*), from
        what it *returned*; when the row no longer carried the run's lease,
        :meth:`_lease_gone` says."""
        held, job_type, has_callback = returned
        if not held:
            return self._lease_gone(curs, values["id"], values["status"], attempt)
        return jobs.ended_job(values, None if job_type is None else (job_type, has_callback))


def _one_trip(row, job_id, outcome, first, attempt) -> bool:
    """Whether a run's end is :data:`_END_RUN_SQL` alone: a first run that finished."""
    return row is not None and job_id is not None and outcome is not None \
        and attempt is not None and jobs.closes_no_attempt(outcome, first)


