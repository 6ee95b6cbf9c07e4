"""A host's role: the job types its consumer takes (``qrq worker --types`` and
``--exclude-types``), as the storage's pick filters its rows."""

from __future__ import annotations

from typing import Any


def type_filter(only: tuple[str, ...], skip: tuple[str, ...]) -> str:
    """Conditions on ``task.job_type`` to append to a pick's ``where``: only the types
    *only* (all when empty), none of *skip*; their names are the parameters, in that
    order. Rows without a job type (the alert check) always pass: any host runs them."""
    sql = ""
    if only:
        sql += f" and (job_type is null or job_type in ({','.join('?' * len(only))}))"
    if skip:
        sql += f" and (job_type is null or job_type not in ({','.join('?' * len(skip))}))"
    return sql


def takes(consumer: dict[str, Any], job_type: str | None) -> bool:
    """Whether *consumer* (a row of :func:`qrq.queue.stats.consumers`) runs jobs of
    *job_type*, by its role; every consumer runs untyped tasks."""
    return not job_type or ((not consumer["job_types"] or job_type in consumer["job_types"])
                            and job_type not in consumer["exclude_job_types"])
