"""A host's role: the job types its consumer takes (``qrq worker --types`` and
``--exclude-types``), as the storage's pick filters its rows."""

from __future__ import annotations


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
