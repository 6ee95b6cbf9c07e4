"""Paused job types: consumers lease no new job of a paused type.

A pause is a row in ``paused_type``; the dequeue's pick (:mod:`qrq.queue.storage`)
skips rows of the types listed there with :data:`NOT_PAUSED`, a condition folded
into the query it runs anyway, so a pause holds from the next dequeue on in every
consumer and the idle poll reads nothing more. Jobs already running finish; queued
and scheduled jobs stay in the queue, untouched, and run once the type is resumed.
"""

from __future__ import annotations

import time
from typing import Any

from qrq.queue.catalog import check_job_type
from qrq.queue.stats import JOB_TYPES

# The task rows a consumer may lease: none of a paused type (job_type is never null in
# paused_type, so "not in" never turns null and hides everything).
NOT_PAUSED = "(job_type is null or job_type not in (select job_type from paused_type))"

# Due queued jobs of a type (as the dashboard counts "queued": not those still waiting
# in huey's schedule for a later time).
_QUEUED = ("select count(*) from job where status = 'queued' and type = ? and id not in "
           "(select job_id from schedule where queue = ? and job_id is not null)")


def queued_of(storage, job_type: str) -> int:
    """How many jobs of *job_type* are queued and due: those a pause holds back."""
    return storage.sql(_QUEUED, (job_type, storage.name), results=True)[0][0]


def pause(storage, job_type: str, by: str = "", now: float | None = None) -> dict[str, Any]:
    """Pause *job_type*: ``{"type", "paused": True, "changed", "queued"}``, where
    ``changed`` is False when it was paused already (the first pause's time stays)."""
    check_job_type(job_type)
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        curs.execute("insert into paused_type (job_type, paused_at, paused_by) "
                     "values (?, ?, ?) on conflict (job_type) do nothing",
                     (job_type, now, by[:64]))
        changed = curs.rowcount == 1
    return {"type": job_type, "paused": True, "changed": changed,
            "queued": queued_of(storage, job_type)}


def resume(storage, job_type: str) -> dict[str, Any]:
    """Resume *job_type*: ``{"type", "paused": False, "changed", "queued"}``; its
    queued jobs become available to every consumer at once."""
    check_job_type(job_type)
    with storage.db(commit=True) as curs:
        curs.execute("delete from paused_type where job_type = ?", (job_type,))
        changed = curs.rowcount == 1
    return {"type": job_type, "paused": False, "changed": changed,
            "queued": queued_of(storage, job_type)}


def paused(storage) -> list[dict[str, Any]]:
    """The paused types, by name: ``[{"type", "paused_at", "paused_by", "queued"}]``,
    ``queued`` counting the due jobs each one holds back."""
    rows = storage.sql("select job_type, paused_at, paused_by from paused_type "
                       "order by job_type", results=True)
    return [{"type": job_type, "paused_at": paused_at, "paused_by": paused_by,
             "queued": queued_of(storage, job_type)}
            for job_type, paused_at, paused_by in rows]


def pause_of(storage, job_type: str) -> dict[str, Any] | None:
    """*job_type*'s pause, ``{"paused_at", "paused_by"}``, or None: one read by key,
    without :func:`paused`'s counts (for a wait that looks every second)."""
    rows = storage.sql("select paused_at, paused_by from paused_type where job_type = ?",
                       (job_type,), results=True)
    return {"paused_at": rows[0][0], "paused_by": rows[0][1]} if rows else None


def describe(outcome: dict[str, Any]) -> str:
    """One sentence about a :func:`pause` or :func:`resume` outcome, for people."""
    job_type, queued = outcome["type"], outcome["queued"]
    jobs = f"{queued} queued job{'' if queued == 1 else 's'}"
    if outcome["paused"]:
        state = "paused" if outcome["changed"] else "was already paused"
        return (f"{job_type} {state}: {jobs} {'waits' if queued == 1 else 'wait'} until it "
                "is resumed; running jobs finish.")
    if not outcome["changed"]:
        return f"{job_type} was not paused; {jobs}."
    return f"{job_type} resumed: {jobs} may start now."


def states(storage) -> list[dict[str, Any]]:
    """Every known job type with whether it is paused (when, by whom) and its due
    queued jobs: what a pause or resume of each would affect."""
    held = {p["type"]: p for p in paused(storage)}
    return [held.get(job_type) or {"type": job_type, "paused_at": None, "paused_by": None,
                                   "queued": queued_of(storage, job_type)}
            for job_type in JOB_TYPES]
