"""A submit on PostgreSQL in one round trip.

The generic enqueue (:meth:`qrq.queue.storage.LeasedStorage.enqueue`) runs its quota
check, the job insert, the task insert and the notification as separate statements,
each a round trip, and on PostgreSQL the owner's advisory lock (``_lock_owner``) is
held across all of them: one user's concurrent submits wait for each other's network
waits (issue 14: 75% of a POST's enqueue). Here the common submit (a job record, no
eta, no ``Idempotency-Key``) is the lock, when a quota is checked, then one statement
that counts, inserts and notifies, then the commit, sent together in psycopg's
pipeline mode: one round trip, and the lock is held only while the server runs them.

The count stays exact: under READ COMMITTED each statement reads a snapshot taken
when it starts, and the statement that counts starts after the lock is granted, so
it sees every job of the owner that a previous holder committed.
"""

from __future__ import annotations

from qrq.queue import admission as admission_checks
from qrq.queue.admission import Admission
from qrq.queue.schema import ACTIVE_SQL

_ADMIT_ALWAYS = "select true as ok"
_ADMIT_UNDER_QUOTA = ("select (select count(*) from job where owner_id = :owner_id and "
                      f"{ACTIVE_SQL}) < :max_active as ok")

# Casts: a parameter in a select list has no column to take its type from.
_SUBMIT_SQL = (
    "with admitted as ({admit}), "
    "new_job as (insert into job (id, type, name, owner_id, params, created_at, payload) "
    "select :id, :type, :name, cast(:owner_id as integer), :params, "
    "cast(:created_at as double precision), :payload from admitted where ok "
    "on conflict do nothing returning id), "
    "new_task as (insert into task (queue, data, priority, job_id, job_type) "
    "select :queue, :data, cast(:priority as double precision), id, :job_type "
    "from new_job returning id), "
    "notified as (select pg_notify(:channel, '') from new_task) "
    "select (select ok from admitted), (select count(*) from notified)")


def fits(job: dict | None, eta, admission: Admission | None) -> bool:
    """Whether :class:`OneTripSubmit` takes this enqueue (else the generic one does)."""
    return job is not None and eta is None and (
        admission is None or admission.idempotency_key is None)


class OneTripSubmit:
    """The enqueue of :class:`qrq.queue.postgres.LeasedPostgresStorage`."""

    def enqueue(self, data, priority=None, job_id=None, job=None, job_type=None, eta=None,
                admission=None) -> str | None:
        if not fits(job, eta, admission):
            return super().enqueue(data, priority, job_id, job, job_type, eta, admission)
        quota = admission.max_active if admission is not None else None
        if job["owner_id"] is None:
            quota = None  # as admission_checks.admit: no owner, no quota
        params = {**job, "payload": self.to_blob(data),
                  "max_active": quota, "queue": self.name, "data": self.to_blob(data),
                  "priority": priority or 0, "job_type": job_type, "channel": self.channel}
        sql = _SUBMIT_SQL.format(admit=_ADMIT_ALWAYS if quota is None else _ADMIT_UNDER_QUOTA)
        with self.connection() as conn:
            with conn.pipeline(), conn.transaction():
                if quota is not None:
                    self._lock_owner(conn.cursor(), job["owner_id"])
                submit = conn.cursor()
                submit.execute(sql, params)
            admitted, _queued = submit.fetchone()
        if not admitted:  # nothing was written
            raise admission_checks.quota_exceeded(quota)
        return job_id
